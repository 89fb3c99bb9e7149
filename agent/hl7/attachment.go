package hl7

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// AttachmentThreshold is the size of Base64 text (in bytes, as it stands in
// the message) above which an OBX value counts as an attachment, to be stored
// as an item of its own (CONTRACT.md "Events": the seed's rule, binaries apart).
const AttachmentThreshold = 64 << 10

// Attachment is a large Base64 payload inside a message: OBX-5 of value type
// ED (its data component) or RP carrying the data inline (its pointer). The
// payload is not copied: Offset and Length locate its Base64 text in the file,
// and Open/Decoder stream the decoded bytes from there.
type Attachment struct {
	Index   int    `json:"index"`   // position among the file's attachments (k)
	Message int    `json:"message"` // the message (0-based) it belongs to
	OBX     int    `json:"obx"`     // which OBX of that message (1-based count, not OBX-1)
	Type    string `json:"type"`    // OBX-2 value type: "ED" or "RP"
	// ContentType is the MIME type from ED-2/ED-3 (RP-3/RP-4), or sniffed from
	// the first decoded bytes when they say nothing usable.
	ContentType string `json:"content_type"`
	Sniffed     bool   `json:"sniffed,omitempty"`
	// Offset and Length locate the Base64 text in the file given to ParseFile
	// (BOM and MLLP byte included in the count).
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	// Escape is the message's escape character: escape sequences inside the
	// payload (\.br\, \X0D\…) are not Base64 and are skipped.
	Escape byte `json:"-"`

	payload []byte // the Base64 text, during parsing only
}

// MaxDecodedSize is an upper bound of the decoded size.
func (a Attachment) MaxDecodedSize() int64 { return (a.Length + 3) / 4 * 3 }

// Decoder streams the decoded bytes of a from r, the file ParseFile read.
// Memory is a fixed buffer whatever the size; a payload that is not Base64
// after all yields an error from Read, never a panic.
func (a Attachment) Decoder(r io.ReaderAt) io.Reader {
	sec := io.NewSectionReader(r, a.Offset, a.Length)
	return base64.NewDecoder(base64.StdEncoding, &b64Filter{r: bufio.NewReaderSize(sec, 32<<10), esc: a.Escape})
}

// OpenAttachment opens the file at path (the one ParseFile read) and streams
// attachment a's decoded bytes. The caller closes it.
func OpenAttachment(path string, a Attachment) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hl7: open attachment %d: %w", a.Index, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hl7: open attachment %d: %w", a.Index, err)
	}
	if a.Offset < 0 || a.Length < 0 || a.Offset+a.Length > st.Size() {
		f.Close()
		return nil, fmt.Errorf("hl7: attachment %d lies outside the file (%d bytes): the file changed since it was parsed", a.Index, st.Size())
	}
	return struct {
		io.Reader
		io.Closer
	}{a.Decoder(f), f}, nil
}

// b64Filter passes only Base64 characters: it drops line breaks, spaces and
// HL7 escape sequences, and pads a payload whose sender left the '=' off.
type b64Filter struct {
	r      io.Reader
	esc    byte
	inEsc  bool
	n      int64 // Base64 characters passed, '=' included
	padded bool
	eof    bool
	pad    int
}

func (f *b64Filter) Read(p []byte) (int, error) {
	for len(p) > 0 {
		if f.eof {
			if f.pad == 0 {
				return 0, io.EOF
			}
			n := min(f.pad, len(p))
			for i := range n {
				p[i] = '='
			}
			f.pad -= n
			return n, nil
		}
		n, err := f.r.Read(p)
		// Filter in place: k <= i always.
		k := 0
		for _, c := range p[:n] {
			if f.esc != 0 && c == f.esc {
				f.inEsc = !f.inEsc
				continue
			}
			if f.inEsc || !isB64(c) {
				continue
			}
			if c == '=' {
				f.padded = true
			}
			p[k] = c
			k++
		}
		f.n += int64(k)
		switch {
		case err == io.EOF:
			f.eof = true
			if !f.padded && f.n%4 != 0 {
				f.pad = int(4 - f.n%4)
			}
		case err != nil:
			return k, err
		}
		if k > 0 {
			return k, nil
		}
	}
	return 0, nil
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
}

// attachment reports whether an OBX (value type typ, OBX-5 value) carries a
// payload above AttachmentThreshold, and where it is.
func (m *Message) attachment(seg, typ, value []byte) (Attachment, bool) {
	d := m.Delims
	t := strings.ToUpper(strings.TrimSpace(d.text(first1(typ, d.Component))))
	if t != "ED" && t != "RP" {
		return Attachment{}, false
	}
	rep := first1(value, d.Repetition)
	var payload []byte
	var kind, sub string
	switch t {
	case "ED":
		// ED: source application ^ type of data ^ data subtype ^ encoding ^ data
		enc := strings.ToUpper(strings.TrimSpace(d.text(nth(rep, d.Component, 3))))
		if enc != "BASE64" && enc != "B64" {
			return Attachment{}, false
		}
		payload = nth(rep, d.Component, 4)
		kind, sub = d.text(nth(rep, d.Component, 1)), d.text(nth(rep, d.Component, 2))
	case "RP":
		// RP: pointer ^ application id ^ type of data ^ subtype. Some senders
		// put the document itself where the pointer goes.
		payload = first1(rep, d.Component)
		if !looksBase64(payload) {
			return Attachment{}, false
		}
		kind, sub = d.text(nth(rep, d.Component, 2)), d.text(nth(rep, d.Component, 3))
	}
	if len(payload) == 0 {
		return Attachment{}, false
	}
	// The caller sets Offset and Length (in the original file) and applies
	// the threshold: payload may be compacted.
	a := Attachment{OBX: m.obxCount, Type: t, Escape: d.Escape, payload: payload}
	a.ContentType = declaredType(kind, sub)
	if a.ContentType == "" {
		a.ContentType, a.Sniffed = sniff(payload, d.Escape), true
	}
	return a, true
}

// looksBase64 checks the start of an RP pointer: a URL or a file name is not
// inline data.
func looksBase64(v []byte) bool {
	if len(v) < 1024 {
		return false
	}
	for _, c := range v[:1024] {
		if !isB64(c) && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// sniff decodes the first few KiB of payload and asks mimetype.
func sniff(payload []byte, esc byte) string {
	head := payload[:min(len(payload), 4096, keepHead)]
	dec := base64.NewDecoder(base64.StdEncoding, &b64Filter{r: bytes.NewReader(head), esc: esc})
	buf := make([]byte, 3072)
	n, _ := io.ReadFull(dec, buf)
	return mimetype.Detect(buf[:n]).String()
}

var mimeToken = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$`)

// subtypes known without their type (ED-2 is often empty or "Application").
var knownSubtypes = map[string]string{
	"pdf": "application/pdf", "jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png",
	"gif": "image/gif", "tiff": "image/tiff", "tif": "image/tiff", "rtf": "application/rtf",
	"xml": "application/xml", "html": "text/html", "plain": "text/plain", "txt": "text/plain",
	"dicom": "application/dicom", "zip": "application/zip", "bmp": "image/bmp",
	"msword": "application/msword", "cda": "application/xml",
}

// declaredType maps ED-2 (HL7 table 0191: AP, IM, AU, TEXT, …) and ED-3 (a
// MIME subtype, or HL7 table 0291: PDF, JPEG, …) to a MIME type; "" when they
// say nothing usable (empty, octet-stream, or not a token).
func declaredType(kind, sub string) string {
	sub = strings.ToLower(strings.TrimSpace(sub))
	kind = strings.ToLower(strings.TrimSpace(kind))
	if t, s, ok := strings.Cut(sub, "/"); ok && mimeToken.MatchString(t) && mimeToken.MatchString(s) {
		if sub == "application/octet-stream" {
			return ""
		}
		return sub
	}
	if full, ok := knownSubtypes[sub]; ok {
		return full
	}
	top := map[string]string{
		"ap": "application", "application": "application", "im": "image", "image": "image",
		"au": "audio", "audio": "audio", "text": "text", "tx": "text", "video": "video",
		"multipart": "multipart",
	}[kind]
	if top == "" || sub == "" || sub == "octet-stream" || !mimeToken.MatchString(sub) {
		return ""
	}
	return top + "/" + sub
}
