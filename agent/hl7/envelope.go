package hl7

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"strings"

	"github.com/edgecourier/courier/spool"
)

// ContentType is the media type Courier gives HL7 v2 files in ER7 encoding.
// IANA registers only the XML encoding (application/hl7v2+xml); this is the
// type the HL7 over HTTP specification uses for ER7.
const ContentType = "x-application/hl7-v2+er7"

// DefaultMaxBytes is the largest file Inspector reads when given no limit.
// Bigger files are uploaded as they are, without an HL7 envelope.
const DefaultMaxBytes = 16 << 20

// maxKey is the longest key kept readable; longer ones are hashed so the
// spool's index stays small whatever a sender puts in MSH-10.
const maxKey = 512

// EnvelopeData is what an HL7 message contributes to its events as data.hl7.
// It names messages and orders, never patients: Patient is a keyed hash.
type EnvelopeData struct {
	MessageType        string `json:"message_type"`
	ControlID          string `json:"control_id"`
	SendingApplication string `json:"sending_application"`
	SendingFacility    string `json:"sending_facility"`
	Version            string `json:"version"`
	FillerOrder        string `json:"filler_order"`
	ResultStatus       string `json:"result_status"`
	// Patient is HMAC-SHA256(salt, PID-3 id) in hex; absent without a salt or PID-3.
	Patient string `json:"patient,omitempty"`
	// SentAt is MSH-7 as sent (HL7 DTM, e.g. "20260815081500+0100").
	SentAt string `json:"sent_at"`
	// Batch: the file is an HL7 batch (FHS/BHS); the fields describe its first message.
	Batch bool `json:"batch,omitempty"`
}

// DedupeKey identifies the message by sender and control id (MSH-3, MSH-4,
// MSH-10): "" when MSH-10 is empty, so the spool falls back to its default rule.
func (m *Message) DedupeKey() string {
	if m.controlKey == "" {
		return ""
	}
	return key(m.appKey, m.facilityKey, m.controlKey)
}

// OrderKey groups the results of one order from one sender (MSH-3, MSH-4,
// OBR-3), so a correction can find what it corrects. "" without OBR-3.
func (m *Message) OrderKey() string {
	if m.orderKey == "" {
		return ""
	}
	return key(m.appKey, m.facilityKey, m.orderKey)
}

// IsCorrection reports a corrected result (result status C).
func (m *Message) IsCorrection() bool {
	return m.ResultStatus == "C"
}

// ContentKey is the hex SHA-256 of the message with the content of MSH-7 left
// out, so a resend that only got a new send time matches. Segments are hashed
// with CR ends and without a BOM or MLLP framing: CR, LF and CRLF copies of a
// message have the same key.
func (m *Message) ContentKey() string {
	h := sha256.New()
	sc := segments{data: m.data}
	for {
		seg, at := sc.next()
		if seg == nil {
			break
		}
		if m.hasSentFld && at <= m.sentStart && m.sentEnd <= at+len(seg) {
			h.Write(seg[:m.sentStart-at])
			h.Write(seg[m.sentEnd-at:])
		} else {
			h.Write(seg)
		}
		h.Write([]byte{'\r'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Envelope is what the spool needs to know about the message. With an empty
// salt the patient is left out altogether: an unkeyed hash of a medical record
// number is easy to reverse.
func (m *Message) Envelope(salt []byte) *spool.Envelope {
	data, err := json.Marshal(m.Data(salt))
	if err != nil {
		// Only strings and a bool: cannot happen.
		panic("hl7: marshal envelope: " + err.Error())
	}
	return &spool.Envelope{
		DedupeKey:    m.DedupeKey(),
		ContentKey:   m.ContentKey(),
		OrderKey:     m.OrderKey(),
		IsCorrection: m.IsCorrection(),
		ContentType:  ContentType,
		Data:         data,
	}
}

// Data is the event's data.hl7 for this message.
func (m *Message) Data(salt []byte) EnvelopeData {
	return EnvelopeData{
		MessageType:        m.MessageType,
		ControlID:          m.ControlID,
		SendingApplication: m.SendingApp,
		SendingFacility:    m.SendingFacility,
		Version:            m.Version,
		FillerOrder:        m.FillerOrder,
		ResultStatus:       m.ResultStatus,
		Patient:            PatientHMAC(salt, m.PatientID),
		SentAt:             m.SendTime,
		Batch:              m.Batch,
	}
}

// PatientHMAC pseudonymises a patient identifier: hex HMAC-SHA256 keyed with
// salt (privacy.id_salt_file). "" when salt or id is empty.
func PatientHMAC(salt []byte, id string) string {
	if len(salt) == 0 || id == "" {
		return ""
	}
	mac := hmac.New(sha256.New, salt)
	mac.Write([]byte(id))
	return hex.EncodeToString(mac.Sum(nil))
}

// Inspector returns the spool's inspector for HL7 v2: for a regular file of at
// most maxBytes (DefaultMaxBytes when <= 0) that starts like an HL7 message and
// parses, the envelope; nil for anything else. It never fails an intake.
func Inspector(salt []byte, maxBytes int64) spool.Inspector {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	salt = bytes.Clone(salt)
	return func(path string) (env *spool.Envelope) {
		// Parse is fuzzed and must not panic; should it ever, the file is still
		// a file and is uploaded without an envelope rather than taking the
		// agent down.
		defer func() {
			if recover() != nil {
				env = nil
			}
		}()
		b := readHL7(path, maxBytes)
		if b == nil {
			return nil
		}
		m, err := Parse(b)
		if err != nil {
			return nil
		}
		return m.Envelope(salt)
	}
}

// readHL7 returns the file's bytes if it is small enough and begins like HL7.
func readHL7(path string, maxBytes int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxBytes {
		return nil
	}
	var head [8]byte
	n, _ := io.ReadFull(f, head[:])
	if !LooksLikeHL7(head[:n]) {
		return nil
	}
	b := make([]byte, n, st.Size()+1)
	copy(b, head[:n])
	buf := bytes.NewBuffer(b)
	if _, err := buf.ReadFrom(io.LimitReader(f, maxBytes-int64(n)+1)); err != nil {
		return nil
	}
	if int64(buf.Len()) > maxBytes {
		return nil // grew past the limit since Stat
	}
	return buf.Bytes()
}

// LooksLikeHL7 reports whether the first bytes of a file could begin an HL7 v2
// message or batch: MSH, FHS or BHS, after an optional BOM or MLLP start byte.
func LooksLikeHL7(head []byte) bool {
	head = bytes.TrimPrefix(head, bom)
	if len(head) > 0 && head[0] == mllpStart {
		head = head[1:]
	}
	return bytes.HasPrefix(head, []byte("MSH")) ||
		bytes.HasPrefix(head, []byte("FHS")) ||
		bytes.HasPrefix(head, []byte("BHS"))
}

// key joins parts unambiguously ('|' and '\' escaped) under "hl7|", or hashes
// them when the result would be long.
func key(parts ...string) string {
	var b strings.Builder
	b.WriteString("hl7")
	for _, p := range parts {
		b.WriteByte('|')
		for i := 0; i < len(p); i++ {
			if p[i] == '|' || p[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(p[i])
		}
	}
	k := b.String()
	if len(k) <= maxKey {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "hl7|sha256:" + hex.EncodeToString(sum[:])
}
