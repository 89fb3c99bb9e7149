package hl7

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// ContentType is the media type Courier gives HL7 v2 files in ER7 encoding.
// IANA registers only the XML encoding (application/hl7v2+xml); this is the
// type the HL7 over HTTP specification uses for ER7.
const ContentType = "x-application/hl7-v2+er7"

// DefaultMaxBytes is the most of a file Inspector holds in memory when given
// no limit (embedded documents above 64 KiB do not count). A file needing more
// is uploaded as it is, without an HL7 envelope.
const DefaultMaxBytes = 16 << 20

// MaxBatchEntries bounds hl7.batch.messages: a batch of thousands of messages
// is counted in full but described for its first MaxBatchEntries.
const MaxBatchEntries = 100

// maxKey is the longest key kept readable; longer ones are hashed so the
// spool's index stays small whatever a sender puts in MSH-10.
const maxKey = 512

// Envelope is what this package learned about a file: the keys the spool
// judges duplicates and corrections by, and what events say (Data). It does
// not know the spool; package agent maps it (agent/hl7.go).
type Envelope struct {
	// DedupeKey identifies the message independent of its bytes
	// (MSH-3|MSH-4|MSH-10; for a batch, all of its messages'). "" = the
	// spool's default rule (same source, same SHA-256).
	DedupeKey string
	// ContentKey must match too for a duplicate: SHA-256 of the message(s)
	// without MSH-7.
	ContentKey string
	// OrderKey groups results of one order (MSH-3|MSH-4|OBR-3).
	OrderKey string
	// IsCorrection: result status C; the file corrects the latest earlier one
	// with the same OrderKey.
	IsCorrection bool
	ContentType  string
	// Data is the event's data.hl7 (the spool adds corrects, control_id_reused).
	Data EnvelopeData
	// Attachments are the file's large Base64 payloads, each to be stored as
	// an item of its own (OpenAttachment streams one).
	Attachments []Attachment
}

// EnvelopeData is what an HL7 file contributes to its events as data.hl7. It
// names messages and orders, never patients: Patient is a keyed hash, and any
// value that carries a patient identifier is replaced by its keyed hash and
// named in Redacted.
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
	// ObservedStart/End: OBR-7/OBR-8 (or the first OBX-14) as sent.
	ObservedStart string `json:"observed_start,omitempty"`
	ObservedEnd   string `json:"observed_end,omitempty"`
	// ServiceSection is OBR-24 (HL7 table 0074).
	ServiceSection string `json:"service_section,omitempty"`
	// Charset is MSH-18 as sent; CharsetUnknown when Courier could not read it
	// (values are then the bytes as sent).
	Charset        string `json:"charset,omitempty"`
	CharsetUnknown bool   `json:"charset_unknown,omitempty"`
	// Redacted names the values replaced by their HMAC because they equal or
	// contain a patient identifier ("control_id", "batch.messages[2].control_id").
	Redacted []string `json:"redacted,omitempty"`
	// Batch describes every message of a batch file; the fields above are
	// its first message.
	Batch *BatchData `json:"batch,omitempty"`
	// Embedded lists the attachments found in the file (each stored as an
	// item of its own; data.attachments has their file ids).
	Embedded []EmbeddedData `json:"embedded,omitempty"`
	// Part is set on the envelope of an attachment's own item: which one of
	// its message's attachments it is.
	Part *EmbeddedData `json:"part,omitempty"`
}

// BatchData is data.hl7.batch.
type BatchData struct {
	Count   int `json:"count"`             // messages in the file
	Batches int `json:"batches,omitempty"` // BHS segments
	// Messages describes the first MaxBatchEntries messages; Truncated when
	// there are more.
	Messages  []BatchEntry `json:"messages"`
	Truncated bool         `json:"truncated,omitempty"`
	// TrailerMismatch: BTS-1 or FTS-1 disagrees with what the file holds.
	TrailerMismatch bool `json:"trailer_mismatch"`
}

// BatchEntry is one message of a batch, judged against the messages before
// it in the same file (see docs/hl7.md).
type BatchEntry struct {
	MessageType  string `json:"message_type"`
	ControlID    string `json:"control_id"`
	ResultStatus string `json:"result_status"`
	// ResendOf: same sender, control id and content (apart from MSH-7) as
	// the message at this index.
	ResendOf *int `json:"resend_of,omitempty"`
	// ControlIDReused: an earlier message here has the same control id but
	// other content.
	ControlIDReused bool `json:"control_id_reused,omitempty"`
	// Corrects: this message (status C) corrects the one at this index.
	Corrects *int `json:"corrects,omitempty"`
}

// EmbeddedData describes one attachment in data.hl7.
type EmbeddedData struct {
	Index       int    `json:"index"`
	Message     int    `json:"message"`
	OBX         int    `json:"obx"`
	ContentType string `json:"content_type"`
	// EncodedSize is the Base64 text's length; the part is about 3/4 of it.
	EncodedSize int64 `json:"encoded_size"`
}

// DedupeKey identifies the message by sender and control id (MSH-3, MSH-4,
// MSH-10): "" when MSH-10 is empty, so the spool falls back to its default
// rule. A key holding a patient identifier is stored hashed.
func (m *Message) DedupeKey() string {
	if m.controlKey == "" {
		return ""
	}
	return m.key(m.appKey, m.facilityKey, m.controlKey)
}

// OrderKey groups the results of one order from one sender (MSH-3, MSH-4,
// OBR-3), so a correction can find what it corrects. "" without OBR-3.
func (m *Message) OrderKey() string {
	if m.orderKey == "" {
		return ""
	}
	return m.key(m.appKey, m.facilityKey, m.orderKey)
}

func (m *Message) key(parts ...string) string {
	ids := messageIdentifiers(m)
	for _, p := range parts {
		if ids.match(p, m.Delims.Component) {
			return hashedKey(parts...)
		}
	}
	return key(parts...)
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

// Envelope is the envelope of a file holding just this message.
func (m *Message) Envelope(salt []byte) *Envelope {
	return (&File{Messages: []*Message{m}, Count: 1, Batch: m.Batch, Attachments: m.Attachments}).Envelope(salt)
}

// Data is the event's data.hl7 for a file holding just this message.
func (m *Message) Data(salt []byte) EnvelopeData {
	return m.Envelope(salt).Data
}

// Envelope is what the spool and the events need to know about the file.
// With an empty salt the patient is left out altogether (an unkeyed hash of a
// medical record number is easy to reverse), and so is every redacted value.
//
// Batches: the file is one item, judged as a whole against earlier files
// (DedupeKey and ContentKey cover every message, so a resent batch is a
// duplicate and a batch with anything new is uploaded), and each message is
// judged against the ones before it in the file (BatchEntry). The first
// correcting message's order is the file's OrderKey.
func (f *File) Envelope(salt []byte) *Envelope {
	first := f.Messages[0]
	r := &redactor{salt: salt, ids: f.identifiers(), comp: first.Delims.Component}
	d := EnvelopeData{
		MessageType:        r.value("message_type", first.MessageType),
		ControlID:          r.value("control_id", first.ControlID),
		SendingApplication: r.value("sending_application", first.SendingApp),
		SendingFacility:    r.value("sending_facility", first.SendingFacility),
		Version:            r.value("version", first.Version),
		FillerOrder:        r.value("filler_order", first.FillerOrder),
		ResultStatus:       r.value("result_status", first.ResultStatus),
		Patient:            PatientHMAC(salt, first.PatientID),
		SentAt:             r.value("sent_at", first.SendTime),
		ObservedStart:      r.value("observed_start", first.ObservedStart),
		ObservedEnd:        r.value("observed_end", first.ObservedEnd),
		ServiceSection:     r.value("service_section", first.ServiceSection),
		Charset:            r.value("charset", first.Charset),
		CharsetUnknown:     first.CharsetUnknown,
	}
	env := &Envelope{ContentType: ContentType, Attachments: slices.Clone(f.Attachments)}
	for i := range env.Attachments {
		a := &env.Attachments[i]
		// ED-3 is the sender's text: it goes into upload metadata too.
		if r.ids.match(a.ContentType, r.comp) {
			a.ContentType = "application/octet-stream"
			r.redacted = append(r.redacted, fmt.Sprintf("embedded[%d].content_type", i))
		}
		d.Embedded = append(d.Embedded, EmbeddedData{Index: a.Index, Message: a.Message, OBX: a.OBX,
			ContentType: a.ContentType, EncodedSize: a.Length})
	}
	if !f.Batch {
		env.DedupeKey, env.ContentKey = first.DedupeKey(), first.ContentKey()
		env.OrderKey, env.IsCorrection = first.OrderKey(), first.IsCorrection()
	} else {
		d.Batch = f.batch(r, env)
	}
	d.Redacted = r.redacted
	env.Data = d
	return env
}

// batch judges each message against the earlier ones of the file and sets
// the file's keys.
func (f *File) batch(r *redactor, env *Envelope) *BatchData {
	b := &BatchData{Count: f.Count, Batches: f.Batches, TrailerMismatch: f.TrailerMismatch,
		Messages: []BatchEntry{}, Truncated: f.Count > MaxBatchEntries}
	type seen struct {
		index   int
		content string
	}
	byControl := map[string][]seen{}
	lastOrder := map[string]int{}
	dk, ck := sha256.New(), sha256.New()
	allKeyed := true
	for i, m := range f.Messages {
		dedupe, content, order := m.DedupeKey(), m.ContentKey(), m.OrderKey()
		fmt.Fprintf(dk, "%d:%s\n", len(dedupe), dedupe)
		fmt.Fprintf(ck, "%s\n", content)
		allKeyed = allKeyed && dedupe != ""
		e := BatchEntry{}
		if dedupe != "" {
			for _, s := range byControl[dedupe] {
				if s.content == content {
					e.ResendOf = &s.index
					break
				}
			}
			e.ControlIDReused = e.ResendOf == nil && len(byControl[dedupe]) > 0
			byControl[dedupe] = append(byControl[dedupe], seen{i, content})
		}
		if order != "" {
			if j, ok := lastOrder[order]; ok && m.IsCorrection() && e.ResendOf == nil {
				e.Corrects = &j
			}
			lastOrder[order] = i
			// The file's order: the first correction's, else the first order.
			if m.IsCorrection() && !env.IsCorrection {
				env.OrderKey, env.IsCorrection = order, true
			} else if env.OrderKey == "" {
				env.OrderKey = order
			}
		}
		if i < MaxBatchEntries {
			p := fmt.Sprintf("batch.messages[%d].", i)
			e.MessageType = r.value(p+"message_type", m.MessageType)
			e.ControlID = r.value(p+"control_id", m.ControlID)
			e.ResultStatus = r.value(p+"result_status", m.ResultStatus)
			b.Messages = append(b.Messages, e)
		}
	}
	for i := range f.extraDedupe {
		fmt.Fprintf(dk, "%d:%s\n", len(f.extraDedupe[i]), f.extraDedupe[i])
		fmt.Fprintf(ck, "%s\n", f.extraContent[i])
		allKeyed = allKeyed && f.extraDedupe[i] != ""
	}
	if allKeyed {
		env.DedupeKey = "hl7batch|" + fmt.Sprint(f.Count) + "|sha256:" + hex.EncodeToString(dk.Sum(nil))
	}
	env.ContentKey = hex.EncodeToString(ck.Sum(nil))
	return b
}

// PartData is data.hl7 for the item made from attachment k of this file: the
// message's data (already redacted) with Part set and without the list of
// all attachments. ok is false when there is no attachment k.
func (e *Envelope) PartData(k int) (EnvelopeData, bool) {
	if k < 0 || k >= len(e.Data.Embedded) {
		return EnvelopeData{}, false
	}
	d := e.Data
	part := d.Embedded[k]
	d.Part, d.Embedded = &part, nil
	return d, true
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

// Inspector returns the inspector for HL7 v2 files: for a regular file that
// starts like an HL7 message and parses, its envelope; nil for anything else.
// It never fails an intake. Files of any size are read (once, streaming);
// maxBytes (DefaultMaxBytes when <= 0) bounds what is held in memory after
// embedded documents are read through, so a 200 MiB message with a PDF
// inside is inspected in a few KiB, and a file that would need more has no
// envelope.
func Inspector(salt []byte, maxBytes int64) func(path string) *Envelope {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	salt = bytes.Clone(salt)
	return func(path string) (env *Envelope) {
		// ParseReader is fuzzed and must not panic; should it ever, the file
		// is still a file and is uploaded without an envelope rather than
		// taking the agent down.
		defer func() {
			if recover() != nil {
				env = nil
			}
		}()
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			return nil
		}
		var head [8]byte
		n, _ := io.ReadFull(f, head[:])
		if !LooksLikeHL7(head[:n]) {
			return nil
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil
		}
		file, err := ParseReader(f, maxBytes)
		if err != nil {
			return nil
		}
		return file.Envelope(salt)
	}
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
	k := joinKey(parts...)
	if len(k) <= maxKey {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "hl7|sha256:" + hex.EncodeToString(sum[:])
}

// hashedKey is key for parts that hold a patient identifier: always hashed,
// so the spool's index holds no identifier; a resend hashes the same.
func hashedKey(parts ...string) string {
	sum := sha256.Sum256([]byte(joinKey(parts...)))
	return "hl7|sha256:" + hex.EncodeToString(sum[:])
}

func joinKey(parts ...string) string {
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
	return b.String()
}
