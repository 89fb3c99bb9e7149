package hl7

import (
	"bytes"
	"encoding/json"
	"errors"
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

	f.Fuzz(func(t *testing.T, b []byte) {
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
