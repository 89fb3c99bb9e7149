package hl7

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// reuse is a public-health style message that uses the MRN everywhere: as
// MSH-10, OBR-3 and inside OBR-2; PID-2 and PID-4 hold other ids.
const reuse = "MSH|^~\\&|ELR|STATELAB|||%s||ORU^R01|MRN0042|P|2.5.1\r" +
	"PID|1|ALT-77^^^X|MRN0042^^^ACME^MR~SSN999887777^^^SSA^SS|OLD123||DOE^JANE\r" +
	"OBR|1|PLC-MRN0042-1|MRN0042^STATELAB|24331-1^Lipid^LN|||20260813071500+0100\r" +
	"OBX|1|NM|2093-3^Chol^LN||187|mg/dL|||||F|||20260813071500+0100\r"

func TestRedactReusedIdentifier(t *testing.T) {
	msg := fmt.Appendf(nil, reuse, "20260815081500")
	f, err := ParseFile(msg)
	if err != nil {
		t.Fatal(err)
	}
	env := f.Envelope(testSalt)
	d := env.Data
	if d.ControlID != PatientHMAC(testSalt, "MRN0042") || d.FillerOrder != PatientHMAC(testSalt, "MRN0042") {
		t.Errorf("control_id %q, filler_order %q: want the HMAC of the value", d.ControlID, d.FillerOrder)
	}
	if !slices.Equal(d.Redacted, []string{"control_id", "filler_order"}) {
		t.Errorf("redacted = %v", d.Redacted)
	}
	doc := checkDocRef("redacted", DocumentReference(DocRefInput{FileID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d", HL7: d}))
	everything := jsonOf(t, d) + jsonOf(t, doc) + env.DedupeKey + env.OrderKey + env.ContentKey
	for _, secret := range []string{"MRN0042", "SSN999887777", "ALT-77", "OLD123", "DOE", "JANE"} {
		if strings.Contains(everything, secret) {
			t.Errorf("%q in the envelope, keys or DocumentReference", secret)
		}
	}
	// Without a salt a redacted value is left out, like the patient.
	if bare := f.Envelope(nil).Data; bare.ControlID != "" || bare.FillerOrder != "" || len(bare.Redacted) != 2 {
		t.Errorf("without salt: control_id %q, filler_order %q, redacted %v", bare.ControlID, bare.FillerOrder, bare.Redacted)
	}
	// A resend (new MSH-7) is still a duplicate: the hashed keys match.
	again, _ := ParseFile(fmt.Appendf(nil, reuse, "20260816090000"))
	if e2 := again.Envelope(testSalt); e2.DedupeKey != env.DedupeKey || e2.ContentKey != env.ContentKey || e2.OrderKey != env.OrderKey {
		t.Error("resend of a redacted message has other keys")
	}
	if !strings.HasPrefix(env.DedupeKey, "hl7|sha256:") || !strings.HasPrefix(env.OrderKey, "hl7|sha256:") {
		t.Errorf("keys holding the MRN are not hashed: %q %q", env.DedupeKey, env.OrderKey)
	}
}

func TestRedactMatching(t *testing.T) {
	ids := identifiers{"mrn0042", "14", "a1"}
	for v, want := range map[string]bool{
		"MRN0042": true, "mrn0042": true, "X-MRN0042-Y": true, "14": true, "A1": true,
		"X^14^Y":   true, // a component
		"20140101": false, "2014": false, "A12": false, "MRN004": false, "": false,
	} {
		if got := ids.match(v, '^'); got != want {
			t.Errorf("match(%q) = %v, want %v", v, got, want)
		}
	}
	// MRG-1 (merge) and PID-18/19 count too, every repetition.
	msg := "MSH|^~\\&|A|F|||1||ADT^A40|ACC55501|P|2.5\r" +
		"PID|1||NEW1^^^H^MR|||||||||||||||ACC55501|SSN12345\r" +
		"MRG|OLD777^^^H^MR~OLD888\r" +
		"OBR|1||OLD888\r"
	d := mustParse(t, []byte(msg)).Data(testSalt)
	if !slices.Equal(d.Redacted, []string{"control_id", "filler_order"}) {
		t.Errorf("PID-18 as control id, MRG-1 as order: redacted %v", d.Redacted)
	}
}

// batch builds an FHS/BHS batch of the given messages with trailer counts.
func batch(bts, fts string, msgs ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString("FHS|^~\\&|LAB|ACME|||20260815090000\rBHS|^~\\&|LAB|ACME|||20260815090000\r")
	for _, m := range msgs {
		b.Write(m)
	}
	b.WriteString("BTS|" + bts + "\rFTS|" + fts + "\r")
	return b.Bytes()
}

func TestBatchThreeMessagesOneResend(t *testing.T) {
	first := oruMsg("20260815081500", "M1", "F", "187")
	second := bytes.Replace(oruMsg("20260815081600", "M2", "F", "5.1"), []byte("LAB2233"), []byte("LAB2234"), 1)
	resend := oruMsg("20260815091500", "M1", "F", "187") // M1 again, new send time
	in := batch("3", "1", first, second, resend)
	f, err := ParseFile(in)
	if err != nil {
		t.Fatal(err)
	}
	if f.Count != 3 || !f.Batch || f.Batches != 1 || f.TrailerMismatch {
		t.Fatalf("count %d, batch %v, batches %d, mismatch %v", f.Count, f.Batch, f.Batches, f.TrailerMismatch)
	}
	env := f.Envelope(testSalt)
	b := env.Data.Batch
	if b == nil || b.Count != 3 || len(b.Messages) != 3 || b.TrailerMismatch || b.Truncated {
		t.Fatalf("batch %+v", b)
	}
	want := []string{"M1", "M2", "M1"}
	for i, e := range b.Messages {
		if e.MessageType != "ORU^R01" || e.ControlID != want[i] || e.ResultStatus != "F" {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	if r := b.Messages[2].ResendOf; r == nil || *r != 0 || b.Messages[1].ResendOf != nil || b.Messages[2].ControlIDReused {
		t.Errorf("resend not recognised: %+v", b.Messages[2])
	}
	checkDocRef("batch", DocumentReference(DocRefInput{FileID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d", HL7: env.Data}))

	// The whole batch sent again (new header times, new MSH-7s) is a duplicate.
	again := bytes.ReplaceAll(batch("3", "1", oruMsg("20260816000000", "M1", "F", "187"), second, resend),
		[]byte("20260815090000"), []byte("20260816090000"))
	e2, _ := ParseFile(again)
	if k := e2.Envelope(testSalt); k.DedupeKey != env.DedupeKey || k.ContentKey != env.ContentKey || k.DedupeKey == "" {
		t.Error("a resent batch does not match the first")
	}
	// One message changed: same control ids, other content → not dropped.
	changed, _ := ParseFile(batch("3", "1", first, second, oruMsg("20260815091500", "M1", "F", "190")))
	ce := changed.Envelope(testSalt)
	if ce.DedupeKey != env.DedupeKey || ce.ContentKey == env.ContentKey || !ce.Data.Batch.Messages[2].ControlIDReused {
		t.Error("a batch with a changed message would be dropped as a duplicate")
	}
	// Trailer counts that disagree.
	for _, tr := range [][2]string{{"2", "1"}, {"3", "2"}} {
		bad, _ := ParseFile(batch(tr[0], tr[1], first, second, resend))
		if !bad.TrailerMismatch || !bad.Envelope(nil).Data.Batch.TrailerMismatch {
			t.Errorf("BTS-1 %s, FTS-1 %s: no trailer_mismatch", tr[0], tr[1])
		}
	}
	// Per-message corrections inside one batch.
	corr, _ := ParseFile(batch("2", "1", first, oruMsg("20260815100000", "M9", "C", "178")))
	ce = corr.Envelope(testSalt)
	if c := ce.Data.Batch.Messages[1].Corrects; c == nil || *c != 0 || !ce.IsCorrection || ce.OrderKey != mustParse(t, first).OrderKey() {
		t.Errorf("correction inside the batch: %+v, file correction %v", ce.Data.Batch.Messages[1], ce.IsCorrection)
	}
}

func TestBatchBounded(t *testing.T) {
	var msgs [][]byte
	for i := range 250 {
		msgs = append(msgs, fmt.Appendf(nil, "MSH|^~\\&|A|F|||1||ADT^A08|C%d|P|2.5\rPID|1||ID%d\r", i, i))
	}
	f, err := ParseFile(batch("250", "1", msgs...))
	if err != nil {
		t.Fatal(err)
	}
	b := f.Envelope(testSalt).Data.Batch
	if b.Count != 250 || len(b.Messages) != MaxBatchEntries || !b.Truncated || b.TrailerMismatch {
		t.Errorf("count %d, entries %d, truncated %v, mismatch %v", b.Count, len(b.Messages), b.Truncated, b.TrailerMismatch)
	}
	// Beyond MaxMessages messages are counted and keyed, not kept.
	var many bytes.Buffer
	for i := range MaxMessages + 5 {
		fmt.Fprintf(&many, "MSH|^~\\&|A|F|||1||ADT^A08|C%d|P|2.5\r", i)
	}
	f, _ = ParseFile(many.Bytes())
	if f.Count != MaxMessages+5 || len(f.Messages) != MaxMessages {
		t.Errorf("count %d, kept %d", f.Count, len(f.Messages))
	}
	k1 := f.Envelope(nil).ContentKey
	f2, _ := ParseFile(append(bytes.Clone(many.Bytes()), "MSH|^~\\&|A|F|||1||ADT^A08|X|P|2.5\r"...))
	if f2.Envelope(nil).ContentKey == k1 {
		t.Error("a message beyond MaxMessages does not change the file's ContentKey")
	}
}

func TestCharsets(t *testing.T) {
	msh := func(facility, charset string) []byte {
		return []byte("MSH|^~\\&|LAB|" + facility + "|||20260815||ADT^A01|C1|P|2.5|||||DE|" + charset + "\rPID|1||123456\r")
	}
	tests := []struct {
		name, facility, charset, want string
		unknown                       bool
	}{
		{"Latin-1 umlaut", "Klinik W\xfcrzburg", "8859/1", "Klinik Würzburg", false},
		{"Latin-9 euro", "\xa4-Labor", "8859/15", "€-Labor", false},
		{"Windows-1252", "\x80 \x93Labor\x94", "WINDOWS-1252", "€ “Labor”", false},
		{"UTF-8", "Klinik Würzburg", "UNICODE UTF-8", "Klinik Würzburg", false},
		{"ASCII", "Lab", "ASCII", "Lab", false},
		{"empty, not UTF-8: Windows-1252", "M\xfcnchen", "", "München", false},
		{"empty, UTF-8", "München", "", "München", false},
		{"unknown", "Lab\xfc", "ISO IR87", "Lab\xfc", true},
		{"repeated MSH-18", "K\xf6ln", "8859/1~UNICODE UTF-8", "Köln", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, msh(tt.facility, tt.charset))
			if m.SendingFacility != tt.want || m.CharsetUnknown != tt.unknown {
				t.Errorf("MSH-4 %q (unknown %v), want %q (unknown %v)", m.SendingFacility, m.CharsetUnknown, tt.want, tt.unknown)
			}
			d := m.Data(testSalt)
			j := jsonOf(t, d)
			if !tt.unknown && !strings.Contains(j, `"sending_facility":"`+tt.want+`"`) {
				t.Errorf("JSON event part: %s", j)
			}
			if tt.unknown && !d.CharsetUnknown {
				t.Error("unknown charset not flagged")
			}
		})
	}
	// A BOM means UTF-8 even without MSH-18.
	m := mustParse(t, append(bytes.Clone(bom), msh("Gen\xc3\xa8ve", "")...))
	if m.SendingFacility != "Genève" {
		t.Errorf("BOM: %q", m.SendingFacility)
	}
}

// pdf returns n bytes that begin and end like a PDF.
func pdf(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	copy(b, "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
	copy(b[n-6:], "%%EOF\n")
	return b
}

// oruWithED is an ORU whose OBX-5 is an ED: ^type^subtype^Base64^data.
func oruWithED(typ, sub, data string) []byte {
	return []byte("MSH|^~\\&|LAB|ACME|||20260815081500||ORU^R01|DOC1|P|2.5.1\r" +
		"PID|1||444333222^^^ACME^MR||EVERYWOMAN^EVE\r" +
		"OBR|1||LAB2233|11502-2^Lab report^LN|||20260813071500+0100||||||||||||||||||F\r" +
		"OBX|1|TX|11502-2^Summary^LN||see PDF||||||F\r" +
		"OBX|2|ED|PDF^Report^L||^" + typ + "^" + sub + "^Base64^" + data + "||||||F\r")
}

func TestAttachmentPDF(t *testing.T) {
	doc := pdf(t, 5<<20)
	msg := oruWithED("AP", "PDF", base64.StdEncoding.EncodeToString(doc))
	path := filepath.Join(t.TempDir(), "oru.hl7")
	if err := os.WriteFile(path, append(bytes.Clone(bom), msg...), 0o600); err != nil {
		t.Fatal(err)
	}
	env := Inspector(testSalt, 0)(path)
	if env == nil || len(env.Attachments) != 1 {
		t.Fatalf("envelope %v: want one attachment", env)
	}
	a := env.Attachments[0]
	if a.ContentType != "application/pdf" || a.Sniffed || a.Message != 0 || a.OBX != 2 || a.Index != 0 || a.Type != "ED" {
		t.Errorf("attachment %+v", a)
	}
	if e := env.Data.Embedded; len(e) != 1 || e[0].ContentType != "application/pdf" || e[0].EncodedSize != a.Length {
		t.Errorf("data.hl7.embedded %+v", e)
	}
	// The decoder yields the PDF byte for byte, with a fixed amount of memory.
	rc, err := OpenAttachment(path, a)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h1, h2 := sha256.New(), sha256.New()
	n, err := io.Copy(h1, rc)
	runtime.ReadMemStats(&after)
	rc.Close()
	h2.Write(doc)
	if err != nil || n != int64(len(doc)) || !bytes.Equal(h1.Sum(nil), h2.Sum(nil)) {
		t.Fatalf("decoded %d bytes (err %v), want the %d-byte PDF exactly", n, err, len(doc))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("decoding a 5 MiB attachment allocated %d bytes: not streaming", alloc)
	}
	// DocumentReferences: the message lists the part, the part points back.
	msgDoc := checkDocRef("message-with-part", DocumentReference(DocRefInput{
		FileID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d", Location: "https://x/files/1", ContentType: ContentType,
		Size: int64(len(msg)), HL7: env.Data,
		Parts: []PartRef{{FileID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4e", ContentType: a.ContentType, Size: -1}},
	}))
	if c := msgDoc["content"].([]any); len(c) != 2 {
		t.Errorf("message DocumentReference content %v: want the message and the part", c)
	}
	partData, ok := env.PartData(0)
	if !ok || partData.Part == nil || partData.Part.ContentType != "application/pdf" || partData.Embedded != nil || partData.Patient != env.Data.Patient {
		t.Errorf("PartData(0) = %+v, %v", partData, ok)
	}
	if _, ok := env.PartData(1); ok {
		t.Error("PartData(1) for a file with one attachment")
	}
	partDoc := checkDocRef("part", DocumentReference(DocRefInput{
		FileID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4e", Location: "https://x/files/2", ContentType: a.ContentType,
		Size: int64(len(doc)), HL7: partData, AttachmentOf: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d",
	}))
	rel := jsonOf(t, partDoc["relatesTo"])
	if !strings.Contains(rel, `"transforms"`) || !strings.Contains(rel, "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d") ||
		!strings.Contains(jsonOf(t, partDoc["category"]), "hl7v2-attachment") {
		t.Errorf("part DocumentReference relatesTo %s", rel)
	}
	// The file changed under us: a clear error, not garbage.
	os.Truncate(path, a.Offset+10)
	if _, err := OpenAttachment(path, a); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("truncated file: %v", err)
	}
}

func TestAttachmentVariants(t *testing.T) {
	doc := pdf(t, 100<<10)
	enc := base64.StdEncoding.EncodeToString(doc)
	// Line breaks written as escapes, a formatting escape, no padding.
	var wrapped strings.Builder
	for i := 0; i < len(enc); i += 76 {
		wrapped.WriteString(enc[i:min(i+76, len(enc))])
		wrapped.WriteString(`\X0D0A\`)
	}
	odd := pdf(t, 100<<10+1)
	tests := []struct {
		name     string
		msg      []byte
		want     []byte
		ctype    string
		sniffed  bool
		attached bool
	}{
		{"declared", oruWithED("AP", "PDF", enc), doc, "application/pdf", false, true},
		{"MIME subtype", oruWithED("", "application/pdf", enc), doc, "application/pdf", false, true},
		{"no type: sniffed", oruWithED("", "", enc), doc, "application/pdf", true, true},
		{"octet-stream: sniffed", oruWithED("AP", "octet-stream", enc), doc, "application/pdf", true, true},
		{"image", oruWithED("IM", "JPEG", enc), doc, "image/jpeg", false, true},
		{"escaped line breaks", oruWithED("AP", "PDF", wrapped.String()), doc, "application/pdf", false, true},
		{"no padding", oruWithED("AP", "PDF", strings.TrimRight(base64.StdEncoding.EncodeToString(odd), "=")), odd, "application/pdf", false, true},
		{"RP inline", []byte("MSH|^~\\&|A|F|||1||ORU^R01|R1|P|2.5\rOBX|1|RP|X||" + enc + "^^AP^PDF||||||F\r"), doc, "application/pdf", false, true},
		{"RP pointer", []byte("MSH|^~\\&|A|F|||1||ORU^R01|R1|P|2.5\rOBX|1|RP|X||https://x/" + strings.Repeat("a", 70000) + "^^AP^PDF\r"), nil, "", false, false},
		{"small ED", oruWithED("AP", "PDF", enc[:1000]), nil, "", false, false},
		{"hex ED", []byte("MSH|^~\\&|A|F|||1||ORU^R01|R1|P|2.5\rOBX|1|ED|X||^AP^PDF^Hex^" + strings.Repeat("AB", 70000) + "\r"), nil, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFile(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.attached {
				if len(f.Attachments) != 0 {
					t.Errorf("attachments %+v, want none", f.Attachments)
				}
				return
			}
			if len(f.Attachments) != 1 {
				t.Fatalf("%d attachments", len(f.Attachments))
			}
			a := f.Attachments[0]
			if a.ContentType != tt.ctype || a.Sniffed != tt.sniffed {
				t.Errorf("content type %q sniffed %v, want %q %v", a.ContentType, a.Sniffed, tt.ctype, tt.sniffed)
			}
			got, err := io.ReadAll(a.Decoder(bytes.NewReader(tt.msg)))
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("decoded %d bytes (err %v), want %d", len(got), err, len(tt.want))
			}
		})
	}
	// An ED-3 that carries the MRN is not published nor used as a type.
	leaky := oruWithED("AP", "x-444333222", enc)
	fl, _ := ParseFile(leaky)
	le := fl.Envelope(testSalt)
	if le.Attachments[0].ContentType != "application/octet-stream" || !slices.Contains(le.Data.Redacted, "embedded[0].content_type") ||
		strings.Contains(jsonOf(t, le.Data), "444333222") {
		t.Errorf("content type from ED-3 with the MRN: %q, redacted %v", le.Attachments[0].ContentType, le.Data.Redacted)
	}
	// Two attachments in a batch: indexes count over the file.
	two, _ := ParseFile(batch("2", "1", oruWithED("AP", "PDF", enc), oruWithED("IM", "PNG", enc)))
	if len(two.Attachments) != 2 || two.Attachments[1].Index != 1 || two.Attachments[1].Message != 1 ||
		two.Attachments[1].ContentType != "image/png" {
		t.Errorf("batch attachments %+v", two.Attachments)
	}
	// Not Base64 after all: an error, not a panic.
	bad := oruWithED("AP", "PDF", strings.Repeat("A", 70001)+"=A=A")
	fb, _ := ParseFile(bad)
	if _, err := io.Copy(io.Discard, fb.Attachments[0].Decoder(bytes.NewReader(bad))); err == nil {
		t.Error("corrupt Base64 decoded without error")
	}
}

func TestBadInputsWithin(t *testing.T) {
	// Every nhapi-bad-inputs file through ParseFile, the envelope and every
	// attachment decoder: no panic, no hang.
	files := corpus(t, "nhapi-bad-inputs")
	for _, name := range sortedNames(files) {
		b := files[name]
		done := make(chan any, 1)
		go func() {
			defer func() { done <- recover() }()
			f, err := ParseFile(b)
			if err != nil {
				return
			}
			f.Envelope(testSalt)
			for _, a := range f.Attachments {
				io.Copy(io.Discard, a.Decoder(bytes.NewReader(b)))
			}
		}()
		select {
		case p := <-done:
			if p != nil {
				t.Errorf("%s: panic %v", name, p)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no answer within 30s", name)
		}
	}
}

// A change anywhere inside an embedded document changes the ContentKey, even
// though the envelope reader keeps only the document's ends.
func TestCompactedContentKey(t *testing.T) {
	doc := pdf(t, 1<<20)
	a := oruWithED("AP", "PDF", base64.StdEncoding.EncodeToString(doc))
	doc[len(doc)/2] ^= 1
	b := oruWithED("AP", "PDF", base64.StdEncoding.EncodeToString(doc))
	fa, _ := ParseFile(a)
	fb, _ := ParseFile(b)
	if fa.Envelope(nil).ContentKey == fb.Envelope(nil).ContentKey {
		t.Error("one bit changed in the middle of the PDF: same ContentKey")
	}
	resend := bytes.Replace(a, []byte("20260815081500"), []byte("20260816000000"), 1)
	fr, _ := ParseFile(resend)
	if fr.Envelope(nil).ContentKey != fa.Envelope(nil).ContentKey {
		t.Error("a resend with a new MSH-7 has another ContentKey")
	}
	// The reader and the bytes give the same file.
	fs, err := ParseReader(bytes.NewReader(a), 1<<20)
	if err != nil || fs.Envelope(nil).ContentKey != fa.Envelope(nil).ContentKey || fs.Attachments[0].Offset != fa.Attachments[0].Offset || fs.Attachments[0].Length != fa.Attachments[0].Length {
		t.Errorf("ParseReader differs from ParseFile: %v", err)
	}
	// Over the limit: an error, not ErrNotHL7 (the file is HL7, just too big to hold).
	if _, err := ParseReader(bytes.NewReader(bytes.Repeat([]byte("MSH|^~\\&|A|F|||1||ADT^A01|1|P|2.5\r"), 100)), 1000); err == nil || errors.Is(err, ErrNotHL7) {
		t.Errorf("over the limit: %v", err)
	}
}

// A 200 MiB message (a 150 MiB document inside) is inspected and its
// attachment decoded with a few MiB of memory.
func TestAttachment200MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200 MiB")
	}
	const size = 150 << 20
	path := filepath.Join(t.TempDir(), "big.hl7")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	head := oruWithED("AP", "PDF", "")
	f.Write(head[:len(head)-len("||||||F\r")])
	// Deterministic content: block i is i repeated, so the decoded bytes can
	// be checked without holding them.
	block := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 32<<10) }
	enc := base64.NewEncoder(base64.StdEncoding, f)
	for i := 0; i < size/(64<<10); i++ {
		enc.Write(block(i))
	}
	enc.Close()
	f.WriteString("||||||F\r")
	f.Close()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	env := Inspector(testSalt, 0)(path)
	if env == nil || len(env.Attachments) != 1 {
		t.Fatalf("envelope %v", env)
	}
	rc, err := OpenAttachment(path, env.Attachments[0])
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	n := 0
	for i := 0; ; i++ {
		_, err := io.ReadFull(rc, buf)
		if err == io.EOF {
			break
		}
		if err != nil || !bytes.Equal(buf, block(i)) {
			t.Fatalf("block %d: %v", i, err)
		}
		n += len(buf)
	}
	rc.Close()
	runtime.ReadMemStats(&after)
	if n != size {
		t.Errorf("decoded %d bytes, want %d", n, size)
	}
	// block() allocates 64 KiB per block for the comparison (150 MiB in all,
	// garbage at once); the inspector and decoder themselves must not hold
	// the document: the live heap stays small.
	if after.HeapInuse > before.HeapInuse+32<<20 {
		t.Errorf("heap grew from %d to %d bytes", before.HeapInuse, after.HeapInuse)
	}
}
