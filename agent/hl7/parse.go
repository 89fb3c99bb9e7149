package hl7

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ErrNotHL7 is returned (wrapped) by Parse for input that is not an HL7 v2 message.
var ErrNotHL7 = errors.New("not an HL7 v2 message")

// maxShown caps the length of the identifiers a Message exposes. HL7 limits these
// fields to a few hundred characters; a hostile message must not push megabytes
// into events.
const maxShown = 256

// Delimiters are the separators a message declares in MSH-1 and MSH-2.
// A zero byte means the message did not declare that character.
type Delimiters struct {
	Field        byte // MSH-1, usually '|'
	Component    byte // usually '^'
	Repetition   byte // usually '~'
	Escape       byte // usually '\'
	Subcomponent byte // usually '&'
	Truncation   byte // 2.7+, usually '#'
}

// Message is the envelope of one HL7 v2 message: the few MSH, PID, MRG, OBR
// and OBX fields Courier needs. Values are decoded (escape sequences resolved,
// MSH-18's character set turned into UTF-8).
//
// PatientID and the other patient identifiers are private: they must never be
// logged or put in an event; use PatientHMAC and Data, which redacts.
type Message struct {
	MessageType     string // MSH-9 components 1 and 2, "ORU^R01"
	ControlID       string // MSH-10
	SendingApp      string // MSH-3 namespace id (or universal id when that is all there is)
	SendingFacility string // MSH-4 namespace id (or universal id)
	Version         string // MSH-12 first component
	SendTime        string // MSH-7 first component, as sent (HL7 DTM)
	FillerOrder     string // first OBR-3, first component
	ResultStatus    string // OBR-25 of the first OBR, else the first non-empty OBX-11
	PatientID       string // (private) PID-3 first repetition, id component
	Batch           bool   // the file is a batch (FHS/BHS, or several MSH); this is one of its messages
	Delims          Delimiters

	// Charset is MSH-18 (first repetition) as sent, "" when absent.
	Charset string
	// CharsetUnknown: MSH-18 names a character set Courier does not know; values
	// are read as bytes.
	CharsetUnknown bool
	// ObservedStart and ObservedEnd are OBR-7 and OBR-8 of the first OBR (as
	// sent, HL7 DTM); without OBR-7 the first OBX-14 is the start.
	ObservedStart, ObservedEnd string
	// ServiceSection is OBR-24 of the first OBR (HL7 table 0074: LAB, RAD, …).
	ServiceSection string
	// Attachments are the large Base64 payloads (OBX ED, or RP with inline data)
	// of this message; Attachment.Index counts over the whole file.
	Attachments []Attachment
	// Index is the message's position in its file (0 for the first).
	Index int

	// Unclipped MSH-3 and MSH-4 (all components), MSH-10, OBR-3 (first
	// repetition, all components), for the keys.
	appKey, facilityKey, controlKey, orderKey string

	// ids are the patient identifiers of this message (PID-2, -3, -4, -18, -19
	// and MRG-1, every repetition's id component) and the patient's names
	// (PID-5 family and given), for redaction. Private.
	ids []string

	cs         charset
	data       []byte // this message's bytes: from its MSH to the next header or trailer
	base       int    // offset of data in the (compacted) file data
	sentStart  int    // MSH-7 content is data[sentStart:sentEnd]
	sentEnd    int
	hasSentFld bool
	sawPID     bool
	sawOBR     bool
	obrStatus  string
	obxStatus  string
	obxPeriod  string
	obxCount   int // OBX segments so far
}

// File is a whole file read by ParseFile: one message, or a batch of them.
type File struct {
	// Messages are the file's messages in order, at most MaxMessages of them.
	Messages []*Message
	// Count is the number of messages in the file (MSH segments), also beyond
	// MaxMessages.
	Count int
	// Batch: the file has FHS or BHS headers, or more than one message.
	Batch bool
	// Batches is the number of BHS segments.
	Batches int
	// TrailerMismatch: a BTS-1 or FTS-1 count disagrees with what the file holds.
	TrailerMismatch bool
	// Attachments are all messages' attachments, in file order (Index is the
	// position here).
	Attachments []Attachment

	// Keys of the messages beyond MaxMessages still count for the file's keys.
	extraDedupe, extraContent []string
	c                         *compacted
}

// MaxMessages bounds how many messages of one file ParseFile keeps: a file of
// millions of tiny messages must not cost gigabytes. The rest are counted and
// still take part in the file's keys.
const MaxMessages = 1000

// maxIDs bounds the patient identifiers kept per message (for redaction).
const maxIDs = 64

// Parse reads the envelope of the first HL7 v2 message of b (ER7, "pipe and
// hat" encoding); ParseFile reads all of them. It accepts a UTF-8 BOM, an MLLP
// start byte, CR, LF or CRLF segment ends and FHS/BHS batch headers. Anything
// else before MSH, or a header whose delimiters make no sense, is ErrNotHL7.
// Parse does linear work in len(b) and never panics; the returned Message
// holds its own (compacted) copy of the bytes it needs.
func Parse(b []byte) (*Message, error) {
	f, err := ParseFile(b)
	if err != nil {
		return nil, err
	}
	return f.Messages[0], nil
}

// ParseFile reads every message of a file: a single message, a batch
// (FHS/BHS … BTS/FTS) or messages simply written one after another. The first
// MSH must parse (else ErrNotHL7); a later MSH whose header does not parse is
// still counted, as a message with empty fields. Linear in len(b).
func ParseFile(b []byte) (*File, error) {
	c, err := compact(bytes.NewReader(b), int64(len(b))+1)
	if err != nil {
		return nil, fmt.Errorf("hl7: %w", err) // cannot happen: a bytes.Reader does not fail
	}
	return parseCompacted(c)
}

// ParseReader is ParseFile for a file read from r, holding at most max bytes
// of it in memory: fields above 64 KiB (embedded documents) are read through,
// not kept, so a 200 MiB message with a PDF inside costs a few KiB. A file
// that would still need more than max bytes is an error (not ErrNotHL7).
func ParseReader(r io.Reader, max int64) (*File, error) {
	c, err := compact(r, max)
	if err != nil {
		return nil, fmt.Errorf("hl7: read envelope: %w", err)
	}
	return parseCompacted(c)
}

func parseCompacted(c *compacted) (*File, error) {
	data := c.data
	if len(data) < 4 {
		return nil, fmt.Errorf("hl7: %d bytes: %w", c.size, ErrNotHL7)
	}
	hasBOM := c.hasBOM
	sc := segments{data: data}
	first, firstAt := sc.next()
	if first == nil || firstAt != 0 {
		return nil, fmt.Errorf("hl7: does not start with MSH, FHS or BHS: %w", ErrNotHL7)
	}
	switch string(first[:min(3, len(first))]) {
	case "MSH", "FHS", "BHS":
	default:
		return nil, fmt.Errorf("hl7: does not start with MSH, FHS or BHS: %w", ErrNotHL7)
	}

	f := &File{c: c}
	sc = segments{data: data}
	var cur *Message // the message being read, nil between messages
	var curAt int
	var last Delimiters // delimiters of the last good header, for trailers
	inBatch, batchCount := false, 0
	finish := func(end int) {
		if cur == nil {
			return
		}
		cur.data = data[curAt:end:end]
		cur.finish()
		if len(f.Messages) < MaxMessages {
			f.Messages = append(f.Messages, cur)
			f.Attachments = append(f.Attachments, cur.Attachments...)
		} else {
			f.extraDedupe = append(f.extraDedupe, cur.DedupeKey())
			f.extraContent = append(f.extraContent, cur.ContentKey())
			cur.data = nil
		}
		cur = nil
	}
	for {
		seg, at := sc.next()
		if seg == nil {
			break
		}
		name := string(seg[:min(3, len(seg))])
		switch name {
		case "MSH":
			finish(at)
			m := &Message{Index: f.Count}
			if err := m.readMSH(seg, 0, hasBOM); err != nil {
				if f.Count == 0 {
					return nil, err
				}
				// Counted, with the delimiters of the message before it.
				*m = Message{Index: f.Count, Delims: last}
			} else {
				last = m.Delims
			}
			m.base = at
			cur, curAt = m, at
			f.Count++
			batchCount++
			continue
		case "FHS", "BHS", "BTS", "FTS":
			finish(at)
			f.Batch = true
			d := last
			if d.Field == 0 && len(seg) > 3 {
				d.Field = seg[3]
			}
			switch name {
			case "BHS":
				f.Batches++
				inBatch, batchCount = true, 0
			case "BTS":
				if n, ok := trailerCount(seg, d.Field); ok && (!inBatch || n != batchCount) {
					f.TrailerMismatch = true
				}
				inBatch = false
			case "FTS":
				if n, ok := trailerCount(seg, d.Field); ok && n != f.Batches {
					f.TrailerMismatch = true
				}
			}
			continue
		}
		if cur != nil {
			cur.readSegment(seg, at-curAt, f)
		}
	}
	finish(len(data))
	if f.Count == 0 {
		return nil, fmt.Errorf("hl7: batch without MSH: %w", ErrNotHL7)
	}
	if len(f.Messages) == 0 || f.Messages[0].MessageType == "" {
		return nil, fmt.Errorf("hl7: first message header does not parse: %w", ErrNotHL7)
	}
	if f.Count > 1 {
		f.Batch = true
	}
	if f.Batch {
		for _, m := range f.Messages {
			m.Batch = true
		}
	}
	return f, nil
}

// trailerCount reads BTS-1 or FTS-1: ok is false when it is empty or not a number.
func trailerCount(seg []byte, sep byte) (int, bool) {
	var fl [2][]byte
	split(seg, sep, fl[:])
	v := fl[1]
	if len(v) == 0 || len(v) > 9 || !digits(string(v)) {
		return 0, false
	}
	n := 0
	for _, c := range v {
		n = n*10 + int(c-'0')
	}
	return n, true
}

// readSegment reads one segment of the message (at is its offset in the
// message's data).
func (m *Message) readSegment(seg []byte, at int, f *File) {
	d := m.Delims
	if len(seg) < 3 || (len(seg) > 3 && seg[3] != d.Field) || d.Field == 0 {
		return
	}
	switch string(seg[:3]) {
	case "PID":
		var fl [20][]byte
		split(seg, d.Field, fl[:])
		if !m.sawPID {
			m.sawPID = true
			m.PatientID = m.text(first1(first1(fl[3], d.Repetition), d.Component))
		}
		for _, i := range []int{2, 3, 4, 18, 19} {
			m.addIDs(fl[i])
		}
		m.addNames(fl[5])
	case "MRG":
		var fl [2][]byte
		split(seg, d.Field, fl[:])
		m.addIDs(fl[1])
	case "OBR":
		if m.sawOBR {
			return
		}
		m.sawOBR = true
		var fl [26][]byte
		split(seg, d.Field, fl[:])
		raw := first1(fl[3], d.Repetition)
		m.FillerOrder = clip(m.text(first1(raw, d.Component)))
		m.orderKey = d.text(raw)
		m.obrStatus = d.text(first1(first1(fl[25], d.Repetition), d.Component))
		m.ObservedStart = clip(m.text(first1(fl[7], d.Component)))
		m.ObservedEnd = clip(m.text(first1(fl[8], d.Component)))
		m.ServiceSection = clip(m.text(first1(first1(fl[24], d.Repetition), d.Component)))
	case "OBX":
		m.obxCount++
		var fl [15][]byte
		split(seg, d.Field, fl[:])
		if m.obxStatus == "" {
			m.obxStatus = d.text(first1(first1(fl[11], d.Repetition), d.Component))
		}
		if m.obxPeriod == "" {
			m.obxPeriod = clip(m.text(first1(fl[14], d.Component)))
		}
		if a, ok := m.attachment(seg, fl[2], fl[5]); ok {
			p := m.base + at + offset(seg, a.payload)
			a.Offset = f.c.origOffset(p)
			a.Length = f.c.origOffset(p+len(a.payload)) - a.Offset
			if a.Length > AttachmentThreshold {
				a.Index = len(f.Attachments) + len(m.Attachments)
				a.Message = m.Index
				a.payload = nil
				m.Attachments = append(m.Attachments, a)
			}
		}
	}
}

// addIDs records the id component of every repetition of a CX field.
func (m *Message) addIDs(v []byte) {
	d := m.Delims
	for len(v) > 0 && len(m.ids) < maxIDs {
		rep := first1(v, d.Repetition)
		if id := m.text(first1(rep, d.Component)); id != "" && !slices.Contains(m.ids, id) {
			m.ids = append(m.ids, id)
		}
		if len(rep) == len(v) {
			break
		}
		v = v[len(rep)+1:]
	}
}

// addNames records the family name (its surname subcomponent) and given name
// of every repetition of PID-5: a sender's or order's name that happens to be
// the patient's is redacted like an identifier.
func (m *Message) addNames(v []byte) {
	d := m.Delims
	for len(v) > 0 && len(m.ids) < maxIDs {
		rep := first1(v, d.Repetition)
		for _, c := range [][]byte{first1(first1(rep, d.Component), d.Subcomponent), nth(rep, d.Component, 1)} {
			if n := m.text(c); len(n) >= 2 && !slices.Contains(m.ids, n) {
				m.ids = append(m.ids, n)
			}
		}
		if len(rep) == len(v) {
			break
		}
		v = v[len(rep)+1:]
	}
}

// finish settles what depends on the whole message.
func (m *Message) finish() {
	// OBR-25 speaks for the whole order; OBX-11 only when OBR-25 is silent.
	m.ResultStatus = m.obrStatus
	if m.ResultStatus == "" {
		m.ResultStatus = m.obxStatus
	}
	m.ResultStatus = clip(m.ResultStatus)
	if m.ObservedStart == "" {
		m.ObservedStart = m.obxPeriod
	}
}

var bom = []byte{0xEF, 0xBB, 0xBF}

const (
	mllpStart = 0x0B
	mllpEnd   = 0x1C
)

// readMSH reads the header segment seg, found at offset at of m.data.
func (m *Message) readMSH(seg []byte, at int, hasBOM bool) error {
	if len(seg) < 4 {
		return fmt.Errorf("hl7: MSH without field separator: %w", ErrNotHL7)
	}
	d := &m.Delims
	d.Field = seg[3]
	if !isDelimiter(d.Field) {
		return fmt.Errorf("hl7: MSH-1 %q is not a delimiter: %w", d.Field, ErrNotHL7)
	}
	// MSH-2 runs to the next field separator. 4 characters classically, a 5th
	// (truncation) since 2.7; fewer are tolerated, more are not HL7.
	enc := seg[4:]
	if i := bytes.IndexByte(enc, d.Field); i >= 0 {
		enc = enc[:i]
	}
	if len(enc) == 0 || len(enc) > 5 {
		return fmt.Errorf("hl7: MSH-2 has %d encoding characters: %w", len(enc), ErrNotHL7)
	}
	var seen [256]bool
	seen[d.Field] = true
	for _, c := range enc {
		if !isDelimiter(c) || seen[c] {
			return fmt.Errorf("hl7: MSH-2 encoding character %q: %w", c, ErrNotHL7)
		}
		seen[c] = true
	}
	slots := []*byte{&d.Component, &d.Repetition, &d.Escape, &d.Subcomponent, &d.Truncation}
	for i, c := range enc {
		*slots[i] = c
	}

	// f[i] is MSH-(i+1): splitting "MSH|^~\&|A" on '|' gives "MSH", "^~\&", "A".
	var f [18][]byte
	split(seg, d.Field, f[:])
	// MSH-18 first: every other value is read in its character set.
	m.Charset = clip(d.text(first1(first1(f[17], d.Repetition), d.Component)))
	m.cs, m.CharsetUnknown = lookupCharset(m.Charset, hasBOM)
	typ := first1(f[8], d.Repetition)
	code := m.text(first1(typ, d.Component))
	if code == "" {
		return fmt.Errorf("hl7: MSH-9 message type is empty: %w", ErrNotHL7)
	}
	m.MessageType = code
	if ev := m.text(nth(typ, d.Component, 1)); ev != "" {
		m.MessageType = code + "^" + ev
	}
	m.MessageType = clip(m.MessageType)
	m.controlKey = d.text(f[9])
	m.ControlID = clip(m.cs.decode(m.controlKey))
	m.appKey = d.text(f[2])
	m.facilityKey = d.text(f[3])
	m.SendingApp = clip(m.cs.decode(d.hd(f[2])))
	m.SendingFacility = clip(m.cs.decode(d.hd(f[3])))
	m.Version = clip(m.text(first1(first1(f[11], d.Repetition), d.Component)))
	m.SendTime = clip(m.text(first1(f[6], d.Component)))
	if f[6] != nil {
		// f[6] is a sub-slice of seg, which is a sub-slice of m.data.
		m.hasSentFld = true
		m.sentStart = at + offset(seg, f[6])
		m.sentEnd = m.sentStart + len(f[6])
	}
	return nil
}

// text decodes one value: escape sequences, then the message's character set.
func (m *Message) text(v []byte) string {
	return m.cs.decode(m.Delims.text(v))
}

// offset is where sub (a sub-slice of s) starts in s.
func offset(s, sub []byte) int {
	return cap(s) - cap(sub)
}

// isDelimiter accepts printable ASCII that is not a letter, digit or space:
// HL7 delimiters in real use, and nothing that would make a garbage file look
// like a header.
func isDelimiter(c byte) bool {
	switch {
	case c <= ' ' || c >= 0x7F:
		return false
	case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		return false
	}
	return true
}

// segments walks the segments of data; CR, LF and CRLF all end one, and empty
// segments are skipped.
type segments struct {
	data []byte
	pos  int
}

// next returns the next non-empty segment and its offset, or nil at the end.
func (s *segments) next() ([]byte, int) {
	for s.pos < len(s.data) {
		start := s.pos
		end := start
		for end < len(s.data) && s.data[end] != '\r' && s.data[end] != '\n' {
			end++
		}
		s.pos = end + 1
		if end > start {
			return s.data[start:end:end], start
		}
	}
	return nil, 0
}

// split fills out with the first len(out) fields of seg; missing fields stay nil.
// It stops early, so a huge trailing field (OBX-5) costs nothing.
func split(seg []byte, sep byte, out [][]byte) {
	for i := range out {
		j := bytes.IndexByte(seg, sep)
		if j < 0 {
			out[i] = seg
			return
		}
		out[i] = seg[:j] // cap runs to the segment's end: offset relies on it
		seg = seg[j+1:]
	}
}

// first1 is the part of v before the first sep (all of v if sep is 0 or absent).
func first1(v []byte, sep byte) []byte {
	if sep == 0 {
		return v
	}
	if i := bytes.IndexByte(v, sep); i >= 0 {
		return v[:i]
	}
	return v
}

// nth is the n-th (0-based) part of v split on sep, nil if there is none.
func nth(v []byte, sep byte, n int) []byte {
	if sep == 0 {
		if n == 0 {
			return v
		}
		return nil
	}
	for ; n > 0; n-- {
		i := bytes.IndexByte(v, sep)
		if i < 0 {
			return nil
		}
		v = v[i+1:]
	}
	return first1(v, sep)
}

// hd names an application or facility (HL7 data type HD): the namespace id, or
// the universal id when the namespace is empty.
func (d Delimiters) hd(v []byte) string {
	v = first1(v, d.Repetition)
	if s := d.text(first1(v, d.Component)); s != "" {
		return s
	}
	return d.text(first1(nth(v, d.Component, 1), d.Subcomponent))
}

// text decodes one value: the HL7 null "" becomes empty, and the escape
// sequences for delimiters (\F\ \S\ \T\ \R\ \E\ \P\) and hex data (\Xhh..\) are
// resolved. Formatting and character-set escapes (\H\ \.br\ \C..\ …) are kept
// as written. Linear in len(v).
func (d Delimiters) text(v []byte) string {
	if len(v) == 2 && v[0] == '"' && v[1] == '"' {
		return ""
	}
	e := d.Escape
	if e == 0 || bytes.IndexByte(v, e) < 0 {
		return string(v)
	}
	out := make([]byte, 0, len(v))
	for len(v) > 0 {
		i := bytes.IndexByte(v, e)
		if i < 0 {
			out = append(out, v...)
			break
		}
		out = append(out, v[:i]...)
		v = v[i+1:]
		j := bytes.IndexByte(v, e)
		if j < 0 {
			// Unterminated: keep it as written.
			out = append(out, e)
			out = append(out, v...)
			break
		}
		seq := v[:j]
		v = v[j+1:]
		if r, ok := d.unescape(seq); ok {
			out = append(out, r...)
			continue
		}
		out = append(out, e)
		out = append(out, seq...)
		out = append(out, e)
	}
	return string(out)
}

// unescape resolves one escape sequence (without its escape characters).
func (d Delimiters) unescape(seq []byte) ([]byte, bool) {
	if len(seq) == 0 {
		return nil, false
	}
	if len(seq) == 1 {
		var c byte
		switch seq[0] {
		case 'F':
			c = d.Field
		case 'S':
			c = d.Component
		case 'T':
			c = d.Subcomponent
		case 'R':
			c = d.Repetition
		case 'E':
			c = d.Escape
		case 'P':
			c = d.Truncation
		}
		if c != 0 {
			return []byte{c}, true
		}
		return nil, false
	}
	if seq[0] == 'X' && len(seq)%2 == 1 {
		out := make([]byte, 0, len(seq)/2)
		for i := 1; i < len(seq); i += 2 {
			hi, ok1 := unhex(seq[i])
			lo, ok2 := unhex(seq[i+1])
			if !ok1 || !ok2 {
				return nil, false
			}
			out = append(out, hi<<4|lo)
		}
		return out, true
	}
	return nil, false
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// clip shortens s to at most maxShown bytes without splitting a UTF-8 sequence.
func clip(s string) string {
	if len(s) <= maxShown {
		return s
	}
	i := maxShown
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}
