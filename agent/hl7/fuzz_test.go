package hl7

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzParse checks that Parse never panics and that what it accepts is
// coherent. The test suite runs the seeds; fuzz with
//
//	go test -fuzz FuzzParse -fuzztime 60s ./agent/hl7/
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"fhir-converter", "nhapi-bad-inputs"} {
		files := corpus(f, dir)
		for _, name := range sortedNames(files) {
			f.Add(files[name])
		}
	}
	f.Add(oruMsg("20260815081500", "MSG1", "C", `A\F\B\X41\\E\`))
	f.Add([]byte("FHS|^~\\&\rBHS|^~\\&\r" + string(oruMsg("1", "2", "F", "3")) + "BTS|1\rFTS|1"))
	f.Add([]byte("\x0bMSH|^~\\&#|A|F|||1||ADT^A01|1|P|2.7\x1c\r"))
	// Batches with resends, corrections and trailer counts; ED payloads
	// (the threshold is lowered while fuzzing, see below).
	f.Add(batch("3", "1", oruMsg("1", "A", "F", "1"), oruMsg("2", "B", "C", "2"), oruMsg("3", "A", "F", "1")))
	f.Add(batch("x", "2", oruMsg("1", "A", "F", "1")))
	f.Add(oruWithED("AP", "PDF", "JVBERi0xLjcK\\.br\\JSVFT0YK"))
	f.Add(oruWithED("", "", "JVBERi0xLjcKJSVFT0YK=A="))
	f.Add([]byte("MSH|^~\\&|A|F|||1||ORU^R01|R1|P|2.5|||||DE|8859/1\rOBX|1|RP|X||JVBERi0x^^AP^PDF\r"))

	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzFile(t, b)
		m, err := Parse(b)
		if err != nil {
			if m != nil || !errors.Is(err, ErrNotHL7) {
				t.Fatalf("Parse = %v, %v", m, err)
			}
			return
		}
		if m.MessageType == "" || len(m.ControlID) > maxShown || len(m.SendTime) > maxShown {
			t.Fatalf("accepted with message type %q, control id %d bytes", m.MessageType, len(m.ControlID))
		}
		if !LooksLikeHL7(b) {
			t.Fatalf("accepted input that does not start like HL7: %q", b[:min(len(b), 16)])
		}
		key := m.ContentKey()
		if m.ContentKey() != key || len(key) != 64 {
			t.Fatalf("ContentKey unstable or malformed: %q", key)
		}
		if len(m.DedupeKey()) > maxKey || len(m.OrderKey()) > maxKey {
			t.Fatal("key too long")
		}
		// The same message with LF ends is the same message.
		if !bytes.ContainsAny(b, "\n") && bytes.IndexByte(b, mllpStart) < 0 {
			lf, err := Parse(bytes.ReplaceAll(b, []byte("\r"), []byte("\n")))
			if err != nil || fieldsOf(lf) != fieldsOf(m) || lf.ContentKey() != key {
				t.Fatalf("LF copy differs: %v", err)
			}
		}
		env := m.Envelope([]byte("salt"))
		raw, err := json.Marshal(env.Data)
		if err != nil || !json.Valid(raw) {
			t.Fatalf("envelope data not JSON: %v", err)
		}
		var data EnvelopeData
		if err := json.Unmarshal(raw, &data); err != nil {
			t.Fatal(err)
		}
		doc := DocumentReference(DocRefInput{FileID: "f", HL7: data})
		if _, err := json.Marshal(doc); err != nil {
			t.Fatalf("DocumentReference: %v", err)
		}
	})
}

// fuzzFile checks ParseFile, the file's envelope and every attachment decoder
// on b: no panic, bounded output, stable keys.
func fuzzFile(t *testing.T, b []byte) {
	// Compaction with tiny sizes: every kept byte maps back to the same byte
	// of the input, and a marker stands only where bytes were left out.
	c, err := compactWith(bytes.NewReader(b), 100*int64(len(b))+1000, 16, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	for p := range c.data[:min(len(c.data), 8192)] {
		if c.data[p] == 0 && bytes.HasPrefix(c.data[p:], []byte("\x00sha256:")) {
			continue
		}
		inMark := false
		for _, s := range c.spans {
			if p >= s.at+s.head && p < s.at+s.head+s.mark {
				inMark = true
			}
		}
		if inMark {
			continue
		}
		if o := c.origOffset(p); o < 0 || o >= int64(len(b)) || b[o] != c.data[p] {
			t.Fatalf("compacted byte %d maps to %d", p, o)
		}
	}
	f, err := ParseFile(b)
	if err != nil {
		return
	}
	if f.Count < len(f.Messages) || len(f.Messages) == 0 || len(f.Messages) > MaxMessages {
		t.Fatalf("count %d, kept %d", f.Count, len(f.Messages))
	}
	env := f.Envelope([]byte("salt"))
	if again := f.Envelope([]byte("salt")); again.DedupeKey != env.DedupeKey || again.ContentKey != env.ContentKey {
		t.Fatal("file keys unstable")
	}
	if bd := env.Data.Batch; bd != nil && (len(bd.Messages) > MaxBatchEntries || bd.Count != f.Count) {
		t.Fatalf("batch data %d entries for %d messages", len(bd.Messages), bd.Count)
	}
	if _, err := json.Marshal(env.Data); err != nil {
		t.Fatal(err)
	}
	for _, a := range f.Attachments {
		if a.Offset < 0 || a.Offset+a.Length > int64(len(b)) {
			t.Fatalf("attachment %d outside the input", a.Index)
		}
		n, _ := io.Copy(io.Discard, a.Decoder(bytes.NewReader(b)))
		if n > a.MaxDecodedSize() {
			t.Fatalf("attachment %d decoded to %d bytes, bound %d", a.Index, n, a.MaxDecodedSize())
		}
	}
	// Any ED/RP value, whatever its size, must decode without panicking:
	// the decoder sees what the threshold would hide from a small input.
	for _, m := range f.Messages {
		sc := segments{data: m.data}
		for {
			seg, _ := sc.next()
			if seg == nil {
				break
			}
			if !bytes.HasPrefix(seg, []byte("OBX")) || m.Delims.Field == 0 {
				continue
			}
			var fl [6][]byte
			split(seg, m.Delims.Field, fl[:])
			payload := nth(first1(fl[5], m.Delims.Repetition), m.Delims.Component, 4)
			a := Attachment{Length: int64(len(payload)), Escape: m.Delims.Escape}
			io.Copy(io.Discard, a.Decoder(bytes.NewReader(payload)))
			declaredType(string(nth(fl[5], m.Delims.Component, 1)), string(nth(fl[5], m.Delims.Component, 2)))
			sniff(payload, m.Delims.Escape)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	files := corpus(b, "fhir-converter")
	var msgs [][]byte
	var total int64
	for _, name := range sortedNames(files) {
		msgs = append(msgs, files[name])
		total += int64(len(files[name]))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		for _, msg := range msgs {
			if _, err := Parse(msg); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEnvelope is what the inspector does per file after reading it:
// parse, hash for the ContentKey, HMAC the patient, marshal the data.
func BenchmarkEnvelope(b *testing.B) {
	files := corpus(b, "fhir-converter")
	var msgs [][]byte
	var total int64
	for _, name := range sortedNames(files) {
		msgs = append(msgs, files[name])
		total += int64(len(files[name]))
	}
	salt := []byte("salt")
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		for _, msg := range msgs {
			m, err := Parse(msg)
			if err != nil {
				b.Fatal(err)
			}
			m.Envelope(salt)
		}
	}
}

// BenchmarkParseLargeOBX is an 8 MiB embedded document (OBX-5, ED).
func BenchmarkParseLargeOBX(b *testing.B) {
	msg := oruMsg("20260815081500", "BIG", "F", string(bytes.Repeat([]byte("QUJD"), 2<<20)))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		m, err := Parse(msg)
		if err != nil {
			b.Fatal(err)
		}
		m.ContentKey()
	}
}
