package mllp

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Outcome is what became of one message, before the acknowledgement mode maps it
// to a code.
type Outcome int

const (
	// Accepted: durable in the spool (received, or a duplicate of an item that is).
	Accepted Outcome = iota
	// TryLater: not stored now (spool full, storage error); the sender must resend.
	TryLater
	// Refused: never stored and never will be (not HL7, too large, peer not allowed).
	Refused
)

// HL7 table 0357 (message error condition codes) as used in ERR.
const (
	errSegmentSequence = 100 // the frame does not begin with a valid MSH
	errInternal        = 207 // too large, spool full, storage failed, peer not allowed
)

var errNames = map[int]string{
	errSegmentSequence: "Segment sequence error",
	errInternal:        "Application internal error",
}

// Reason says why a message was not accepted: an HL7 table 0357 code and our own
// wording, which never carries message content.
type Reason struct {
	Code int
	Text string
}

// Header is the raw MSH of a message: values exactly as sent (escape sequences
// untouched), so they can be echoed with the message's own delimiters.
type Header struct {
	Field byte     // MSH-1
	Enc   string   // MSH-2, the encoding characters (4, or 5 from v2.7)
	f     []string // f[i] is MSH-(i+1) for i >= 2; f[0] = "MSH", f[1] = MSH-2
}

// maxHeader bounds the MSH segment we look at: a sender cannot make us copy a
// megabyte header into every ACK.
const maxHeader = 8 << 10

// ParseHeader finds the first MSH segment of a message (after an optional UTF-8
// BOM and FHS/BHS batch headers) and splits it into raw fields. ok is false when
// there is none or its delimiters make no sense.
func ParseHeader(msg []byte) (h *Header, ok bool) {
	data := bytes.TrimPrefix(msg, []byte{0xEF, 0xBB, 0xBF})
	for len(data) > 0 {
		end := bytes.IndexAny(data, "\r\n")
		seg := data
		if end >= 0 {
			seg = data[:end]
		}
		switch {
		case len(seg) == 0:
		case bytes.HasPrefix(seg, []byte("MSH")):
			return splitMSH(seg)
		case bytes.HasPrefix(seg, []byte("FHS")), bytes.HasPrefix(seg, []byte("BHS")):
		default:
			return nil, false
		}
		if end < 0 {
			break
		}
		data = data[end+1:]
	}
	return nil, false
}

func splitMSH(seg []byte) (*Header, bool) {
	if len(seg) > maxHeader {
		seg = seg[:maxHeader]
	}
	if len(seg) < 8 || !isDelimiter(seg[3]) {
		return nil, false
	}
	h := &Header{Field: seg[3]}
	h.f = strings.Split(string(seg), string(h.Field))
	h.Enc = h.f[1]
	if len(h.Enc) < 4 || len(h.Enc) > 5 {
		return nil, false
	}
	seen := map[byte]bool{h.Field: true}
	for i := 0; i < len(h.Enc); i++ {
		c := h.Enc[i]
		if !isDelimiter(c) || seen[c] {
			return nil, false
		}
		seen[c] = true
	}
	return h, true
}

func isDelimiter(c byte) bool {
	switch {
	case c <= ' ' || c >= 0x7F:
		return false
	case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		return false
	}
	return true
}

// MSH is the raw MSH-n ("" when absent). MSH-1 is the field separator itself.
func (h *Header) MSH(n int) string { return h.field(n) }

func (h *Header) field(n int) string {
	switch {
	case n == 1:
		return string(h.Field)
	case n >= 2 && n-1 < len(h.f):
		return h.f[n-1]
	}
	return ""
}

// comp is component i (1-based) of the first repetition of raw value v.
func (h *Header) comp(v string, i int) string {
	if j := strings.IndexByte(v, h.Enc[1]); j >= 0 { // repetition
		v = v[:j]
	}
	parts := strings.Split(v, h.Enc[:1])
	if i-1 < len(parts) {
		return parts[i-1]
	}
	return ""
}

// ControlID is MSH-10 as sent.
func (h *Header) ControlID() string { return h.field(10) }

// Version is the first component of MSH-12.
func (h *Header) Version() string { return h.comp(h.field(12), 1) }

func (h *Header) ackType(n int) string {
	return strings.ToUpper(strings.TrimSpace(h.comp(h.field(n), 1)))
}

// Decide maps an outcome to the acknowledgement code the sender asked for, and
// whether to send one at all.
//
//   - Original mode (MSH-15 empty, or no usable header): AA, AE, AR, always sent.
//   - Enhanced mode (MSH-15 set): a commit acknowledgement CA, CE, CR when MSH-15
//     asks for one for this outcome (AL always, ER on error/reject, SU on
//     success, NE never; a value we do not know is read as AL, an answer being
//     safer than silence).
//   - If MSH-15 asks for no commit ACK for this outcome but MSH-16 asks for an
//     application ACK for it, Courier answers as the receiving application with
//     AA, AE or AR: storing the message durably is all the application
//     processing Courier does, and a sender waiting for an application ACK that
//     nobody will send would wait forever. Only one ACK is ever sent per message
//     (a second frame would be read by simple clients as the answer to their
//     next message).
//   - Neither asks: no ACK. A message that could not be stored is then not
//     answered but held and retried (the connection stops being read, so TCP
//     pushes back on the sender) — a sender that wants no answer must never be
//     the one that loses a message.
func Decide(h *Header, o Outcome) (code string, send bool) {
	orig := [...]string{Accepted: "AA", TryLater: "AE", Refused: "AR"}
	if h == nil || h.ackType(15) == "" {
		return orig[o], true
	}
	wants := func(t string) bool {
		switch t {
		case "AL":
			return true
		case "NE", "":
			return false
		case "ER":
			return o != Accepted
		case "SU":
			return o == Accepted
		}
		return true
	}
	if wants(h.ackType(15)) {
		return [...]string{Accepted: "CA", TryLater: "CE", Refused: "CR"}[o], true
	}
	if wants(h.ackType(16)) {
		return orig[o], true
	}
	return "", false
}

// versionAtLeast compares dotted HL7 versions ("2.3.1" >= "2.3"); an unknown or
// unreadable version counts as new.
func versionAtLeast(v, min string) bool {
	if v == "" {
		return true
	}
	a, b := strings.Split(v, "."), strings.Split(min, ".")
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			n, err := strconv.Atoi(a[i])
			if err != nil {
				return true
			}
			x = n
		}
		if i < len(b) {
			y, _ = strconv.Atoi(b[i])
		}
		if x != y {
			return x > y
		}
	}
	return true
}

// defaultHeader answers frames without a usable MSH: standard delimiters, v2.5.1.
var defaultHeader = &Header{Field: '|', Enc: `^~\&`, f: []string{"MSH", `^~\&`, "", "", "", "", "", "", "", "", "P", "2.5.1"}}

// BuildACK makes the acknowledgement of a message with header h (nil: none
// usable) per HL7 v2 chapter 2:
//
//   - MSH uses the message's field separator and encoding characters; sending and
//     receiving application/facility are swapped (MSH-3/4 ↔ MSH-5/6); MSH-7 is
//     now; MSH-9 is ACK^<trigger of the message>^ACK (the structure component only
//     from v2.3.1, which introduced it); MSH-10 is a fresh control id; processing
//     id (MSH-11), version (MSH-12) and character set (MSH-18) are echoed. The
//     ACK asks for no acknowledgement itself (MSH-15/16 empty).
//   - MSA-1 is code, MSA-2 the message's MSH-10. For a refusal or error, MSA-3
//     carries the reason's text up to v2.6 (withdrawn in v2.7).
//   - ERR (only when r is not nil): from v2.5 ERR-3 = code^name^HL70357, ERR-4 =
//     E, ERR-8 = the text; before v2.5, ERR-1 = ^^^code&name&HL70357.
//
// Segments end with CR. Our own text is escaped; echoed values are copied as sent.
func BuildACK(h *Header, code string, r *Reason, now time.Time, controlID string) []byte {
	orig := h
	if h == nil {
		h = defaultHeader
	}
	fs := string(h.Field)
	cs := h.Enc[:1]
	ver := h.Version()
	var b strings.Builder
	b.WriteString("MSH" + fs + h.Enc)
	typ := "ACK"
	if orig != nil {
		if trig := echo(h.comp(h.field(9), 2)); trig != "" {
			typ += cs + trig
			if versionAtLeast(ver, "2.3.1") {
				typ += cs + "ACK"
			}
		}
	}
	proc := echo(h.field(11))
	if proc == "" {
		proc = "P"
	}
	fields := []string{
		echo(h.field(5)), echo(h.field(6)), echo(h.field(3)), echo(h.field(4)), // MSH-3..6
		sendTime(h, now),  // MSH-7
		"",                // MSH-8
		typ,               // MSH-9
		controlID,         // MSH-10
		proc,              // MSH-11
		echo(h.field(12)), // MSH-12
	}
	if cset := echo(h.field(18)); cset != "" {
		fields = append(fields, "", "", "", "", "", cset) // MSH-13..18
	}
	for _, f := range fields {
		b.WriteString(fs + f)
	}
	b.WriteByte('\r')
	b.WriteString("MSA" + fs + code + fs + echo(h.ControlID()))
	if r != nil && !versionAtLeast(ver, "2.7") {
		b.WriteString(fs + escape(h, r.Text))
	}
	b.WriteByte('\r')
	if r != nil {
		name := escape(h, errNames[r.Code])
		if versionAtLeast(ver, "2.5") {
			b.WriteString("ERR" + fs + fs + fs + strconv.Itoa(r.Code) + cs + name + cs + "HL70357" +
				fs + "E" + fs + fs + fs + fs + escape(h, r.Text))
		} else {
			ss := h.Enc[3:4]
			b.WriteString("ERR" + fs + cs + cs + cs + strconv.Itoa(r.Code) + ss + name + ss + "HL70357")
		}
		b.WriteByte('\r')
	}
	return []byte(b.String())
}

// sendTime is MSH-7: with milliseconds and UTC offset, unless the message's
// delimiters include '.', '+' or '-' (any printable non-alphanumeric may be one).
func sendTime(h *Header, now time.Time) string {
	t := now.Format("20060102150405.000-0700")
	if strings.ContainsAny(t, string(h.Field)+h.Enc) {
		return now.Format("20060102150405")
	}
	return t
}

// echo is a value of the message as the ACK repeats it: as sent, except control
// characters (a VT or FS in an ACK could be taken for MLLP framing by the sender).
func echo(v string) string {
	if strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7F }) < 0 {
		return v
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7F {
			return -1
		}
		return r
	}, v)
}

// escape writes our own text with the message's escape sequences (\F\ \S\ \R\ \E\ \T\).
func escape(h *Header, s string) string {
	esc := h.Enc[2]
	names := map[byte]byte{h.Field: 'F', h.Enc[0]: 'S', h.Enc[1]: 'R', esc: 'E', h.Enc[3]: 'T'}
	if len(h.Enc) == 5 {
		names[h.Enc[4]] = 'P' // the truncation character (v2.7+)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		if n, ok := names[c]; ok {
			b.WriteByte(esc)
			b.WriteByte(n)
			b.WriteByte(esc)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

var ackSeq atomic.Uint32

// NewControlID is a fresh MSH-10 for an ACK: 20 characters (the v2.5 limit),
// milliseconds since 1970 then a per-process random part and a counter, so ids
// sort by time and do not repeat across restarts.
func NewControlID(now time.Time) string {
	return fmt.Sprintf("%012X%s%04X", now.UnixMilli()&0xFFFFFFFFFFFF, procTag, ackSeq.Add(1)&0xFFFF)
}

var procTag = func() string {
	var b [2]byte
	rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}()
