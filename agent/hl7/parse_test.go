package hl7

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fields is what a test compares of a Message.
type fields struct {
	MessageType, ControlID, SendingApp, SendingFacility, Version, SendTime string
	FillerOrder, ResultStatus, PatientID                                   string
	Batch                                                                  bool
}

func fieldsOf(m *Message) fields {
	return fields{m.MessageType, m.ControlID, m.SendingApp, m.SendingFacility, m.Version, m.SendTime,
		m.FillerOrder, m.ResultStatus, m.PatientID, m.Batch}
}

func mustParse(t *testing.T, b []byte) *Message {
	t.Helper()
	m, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestParseCorpusGood(t *testing.T) {
	files := corpus(t, "fhir-converter")
	if len(files) < 100 {
		t.Fatalf("expected the 139 fhir-converter messages, found %d files", len(files))
	}
	for _, name := range sortedNames(files) {
		b := files[name]
		m, err := Parse(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if m.MessageType == "" || m.ControlID == "" {
			t.Errorf("%s: message type %q, control id %q: want both", name, m.MessageType, m.ControlID)
		}
		if m.DedupeKey() == "" || len(m.ContentKey()) != 64 {
			t.Errorf("%s: dedupe key %q, content key %q", name, m.DedupeKey(), m.ContentKey())
		}
		// Stable: the same bytes give the same envelope.
		again := mustParse(t, bytes.Clone(b))
		if fieldsOf(again) != fieldsOf(m) || again.ContentKey() != m.ContentKey() ||
			again.DedupeKey() != m.DedupeKey() || again.OrderKey() != m.OrderKey() {
			t.Errorf("%s: second parse differs", name)
		}
	}
}

func TestParseGolden(t *testing.T) {
	files := corpus(t, "fhir-converter")
	tests := []struct {
		file string
		want fields
		// Keys, spelled out so a change to their format is a visible decision.
		dedupe, order string
	}{
		{
			file: "ORU-R01-01.hl7", // LF ends, ED and RP OBX values, OBX before OBR
			want: fields{"ORU^R01", "2.16.840.1.114222.4.3.3.5.1.2-20120314235954.325", "IA PHIMS Stage",
				"IA Public Health Lab", "2.5.1", "201203141259-0215", "986", "F", "14", false},
			dedupe: "hl7|IA PHIMS Stage^2.16.840.1.114222.4.3.3.5.1.2^ISO|IA Public Health Lab^2.16.840.1.114222.4.1.10411^ISO|2.16.840.1.114222.4.3.3.5.1.2-20120314235954.325",
			order:  "hl7|IA PHIMS Stage^2.16.840.1.114222.4.3.3.5.1.2^ISO|IA Public Health Lab^2.16.840.1.114222.4.1.10411^ISO|986^IA PHIMS Stage^2.16.840.1.114222.4.3.3.5.1.2^ISO",
		},
		{
			file: "MDM-T02-01.hl7", // ED PDF with empty data
			want: fields{"MDM^T02", "PS1-20080131160038", "PROSOLV", "XYZHOSPITAL", "2.8", "200801311600+0215", "1-1", "F", "987654321", false},
			// MSH-3 is also the patient's family name: the keys are stored hashed.
			dedupe: "hl7|sha256:ee383adfa8aaae16e9c95bf9c238748b55e480151982992a3212321e174f5761",
			order:  "hl7|sha256:399be2d79863f64b5466395cdba2a2d161a8ab6a5037ca5ddd2a0cf6b3420eff",
		},
		{
			file:   "LAB-ORU-1.hl7", // BOM, empty MSH-4, two OBRs (the first counts)
			want:   fields{"ORU^R01", "182", "SomeSystem", "", "2.5", "20141006064500+0700", "82503246", "F", "10006579", false},
			dedupe: "hl7|SomeSystem||182",
			order:  "hl7|SomeSystem||82503246",
		},
		{
			file:   "VXU.hl7", // BOM, fractional seconds in MSH-7, no OBR: status from OBX-11
			want:   fields{"VXU^V04", "NIST-IZ-AD-2.1_Send_V04_Z22", "NISTEHRAPP", "NISTEHRFAC", "2.5.1", "20150624084727.655-0500", "", "F", "90012", false},
			dedupe: "hl7|NISTEHRAPP|NISTEHRFAC|NIST-IZ-AD-2.1_Send_V04_Z22",
		},
		{
			file:   "ADT-A01-01.hl7", // HD with universal id in MSH-4
			want:   fields{"ADT^A01", "MSG00001", "ADTApp", "GHHSFacility", "2.8", "198908181126+0215", "", "S", "PATID1234", false},
			dedupe: "hl7|ADTApp|GHHSFacility^2.16.840.1.122848.1.30^ISO|MSG00001",
		},
		{
			file:   "PC1-Problem-Add-v2.3.1.hl7", // no sending application or facility
			want:   fields{"PPR^PC1", "331", "", "", "2.3.1", "20040629164652", "", "", "10290", false},
			dedupe: "hl7|||331",
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, ok := files[tt.file]
			if !ok {
				t.Fatalf("%s not in corpus", tt.file)
			}
			m := mustParse(t, b)
			if got := fieldsOf(m); got != tt.want {
				t.Errorf("fields\n got %+v\nwant %+v", got, tt.want)
			}
			if got := m.DedupeKey(); got != tt.dedupe {
				t.Errorf("DedupeKey = %q, want %q", got, tt.dedupe)
			}
			if got := m.OrderKey(); got != tt.order {
				t.Errorf("OrderKey = %q, want %q", got, tt.order)
			}
			if m.IsCorrection() {
				t.Errorf("IsCorrection = true for status %q", m.ResultStatus)
			}
		})
	}
}

// parseWithin runs Parse in a goroutine and fails if it panics or does not
// return within limit (a hang, not a slow run: the limit is generous).
func parseWithin(t *testing.T, name string, b []byte, limit time.Duration) (*Message, error) {
	t.Helper()
	type result struct {
		m     *Message
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			r.panic = recover()
			done <- r
		}()
		r.m, r.err = Parse(b)
		if r.m != nil {
			r.m.ContentKey()
			r.m.Envelope([]byte("salt"))
		}
	}()
	select {
	case r := <-done:
		if r.panic != nil {
			t.Fatalf("%s: Parse panicked: %v", name, r.panic)
		}
		return r.m, r.err
	case <-time.After(limit):
		t.Fatalf("%s: Parse did not return within %v", name, limit)
		return nil, nil
	}
}

func TestParseBadInputs(t *testing.T) {
	files := corpus(t, "nhapi-bad-inputs")
	parsed := 0
	for _, name := range sortedNames(files) {
		b := files[name]
		m, err := parseWithin(t, name, b, 30*time.Second)
		if err != nil {
			if !errors.Is(err, ErrNotHL7) {
				t.Errorf("%s: error %v is not ErrNotHL7", name, err)
			}
			continue
		}
		parsed++
		if m.MessageType == "" {
			t.Errorf("%s: parsed without a message type", name)
		}
		// Leading garbage is never HL7.
		if !LooksLikeHL7(b) {
			t.Errorf("%s: parsed although it does not start like HL7", name)
		}
	}
	// Most of these are not HL7 at all (letters and digits as delimiters,
	// garbage before MSH); a few are odd but readable headers.
	if parsed > 8 {
		t.Errorf("%d of %d bad inputs parsed as HL7", parsed, len(files))
	}
}

// oru is a small result message; %s is MSH-7, %s MSH-10, %s OBR-25, %s OBX-5.
const oru = "MSH|^~\\&|LAB|ACME|EHR|CLINIC|%s||ORU^R01^ORU_R01|%s|P|2.5.1\r" +
	"PID|1||444333222^^^ACME&1.2.840.114398.1.100&ISO^MR||EVERYWOMAN^EVE^E||19620320|F\r" +
	"OBR|1|ORD776655|LAB2233^ACME|24331-1^Lipid Panel^LN|||20260813071500||||||||||||||||||%s\r" +
	"OBX|1|NM|2093-3^Cholesterol^LN||%s|mg/dL|<200|N|||F\r"

func oruMsg(sent, control, status, value string) []byte {
	return fmt.Appendf(nil, oru, sent, control, status, value)
}

func TestParseLineEndings(t *testing.T) {
	cr := oruMsg("20260815081500", "MSG1", "F", "187")
	variants := map[string][]byte{
		"CR":       cr,
		"LF":       bytes.ReplaceAll(cr, []byte("\r"), []byte("\n")),
		"CRLF":     bytes.ReplaceAll(cr, []byte("\r"), []byte("\r\n")),
		"mixed":    []byte(strings.Replace(string(cr), "\r", "\n", 2)),
		"no end":   bytes.TrimSuffix(cr, []byte("\r")),
		"blank":    bytes.ReplaceAll(cr, []byte("\r"), []byte("\r\n\r\n")),
		"BOM+CRLF": append(append([]byte{}, bom...), bytes.ReplaceAll(cr, []byte("\r"), []byte("\r\n"))...),
		"MLLP":     append(append([]byte{mllpStart}, cr...), mllpEnd, '\r'),
	}
	want := mustParse(t, cr)
	if want.PatientID != "444333222" || want.FillerOrder != "LAB2233" || want.ResultStatus != "F" {
		t.Fatalf("CR message read wrong: %+v", fieldsOf(want))
	}
	for name, b := range variants {
		m := mustParse(t, b)
		if fieldsOf(m) != fieldsOf(want) {
			t.Errorf("%s: fields %+v, want %+v", name, fieldsOf(m), fieldsOf(want))
		}
		if m.ContentKey() != want.ContentKey() || m.DedupeKey() != want.DedupeKey() || m.OrderKey() != want.OrderKey() {
			t.Errorf("%s: keys differ from the CR message", name)
		}
	}
}

func TestParseBOM(t *testing.T) {
	files := corpus(t, "fhir-converter")
	withBOM := 0
	for _, name := range sortedNames(files) {
		b := files[name]
		if !bytes.HasPrefix(b, bom) {
			continue
		}
		withBOM++
		a, b2 := mustParse(t, b), mustParse(t, b[len(bom):])
		if fieldsOf(a) != fieldsOf(b2) || a.ContentKey() != b2.ContentKey() {
			t.Errorf("%s: BOM changes the envelope", name)
		}
	}
	if withBOM == 0 {
		t.Fatal("no corpus message has a BOM; the test tests nothing")
	}
}

func TestParseEncodingCharacters(t *testing.T) {
	tests := []struct {
		name, msg string
		want      Delimiters
		control   string
	}{
		{"4 chars", "MSH|^~\\&|A|F|||20260101||ADT^A01|C\\F\\1|P|2.5",
			Delimiters{'|', '^', '~', '\\', '&', 0}, "C|1"},
		{"5 chars (2.7 truncation)", "MSH|^~\\&#|A|F|||20260101||ADT^A01|C\\P\\1|P|2.7",
			Delimiters{'|', '^', '~', '\\', '&', '#'}, "C#1"},
		{"own delimiters", "MSH!@#$%|!A!F!!!20260101!!ADT@A01!C$S$1!P!2.5",
			Delimiters{'!', '@', '#', '$', '%', '|'}, "C@1"},
		{"3 chars", "MSH|^~\\|A|F|||20260101||ADT^A01|C1|P|2.3",
			Delimiters{'|', '^', '~', '\\', 0, 0}, "C1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, []byte(tt.msg))
			if m.Delims != tt.want {
				t.Errorf("Delims = %+v, want %+v", m.Delims, tt.want)
			}
			if m.MessageType != "ADT^A01" || m.ControlID != tt.control || m.SendingApp != "A" || m.SendingFacility != "F" {
				t.Errorf("fields %+v", fieldsOf(m))
			}
		})
	}
}

func TestParseEscapes(t *testing.T) {
	tests := []struct{ raw, want string }{
		{`A\F\B`, "A|B"},
		{`A\S\B\T\C\R\D\E\E`, `A^B&C~D\E`},
		{`\X41422B\`, "AB+"},
		{`\X4\`, `\X4\`},           // odd hex: kept
		{`\XZZ\`, `\XZZ\`},         // not hex: kept
		{`a\H\b\N\c`, `a\H\b\N\c`}, // formatting: kept
		{`a\.br\b`, `a\.br\b`},
		{`open\F`, `open\F`}, // unterminated: kept
		{`\\`, `\\`},         // empty sequence: kept
		{`""`, ""},           // HL7 null
		{`\`, `\`},
	}
	for _, tt := range tests {
		msg := "MSH|^~\\&|A|F|||20260101||ADT^A01|" + tt.raw + "|P|2.5"
		m := mustParse(t, []byte(msg))
		if m.ControlID != tt.want {
			t.Errorf("MSH-10 %q decoded to %q, want %q", tt.raw, m.ControlID, tt.want)
		}
	}
}

func TestParseNotHL7(t *testing.T) {
	tests := map[string]string{
		"empty":             "",
		"short":             "MSH",
		"leading space":     " MSH|^~\\&|A|F|||20260101||ADT^A01|1|P|2.5",
		"leading newline":   "\nMSH|^~\\&|A|F|||20260101||ADT^A01|1|P|2.5",
		"leading garbage":   "\x00\x00\x02MSH|^~\\&|A|F|||20260101||ADT^A01|1|P|2.5",
		"text":              "Dear colleague,\nplease find attached",
		"pdf":               "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
		"letter separator":  "MSHA^~\\&A",
		"digit in MSH-2":    "MSH|^~0&|A|F|||20260101||ADT^A01|1|P|2.5",
		"repeated in MSH-2": "MSH|^^\\&|A|F|||20260101||ADT^A01|1|P|2.5",
		"MSH-2 too long":    "MSH|^~\\&#!|A|F|||20260101||ADT^A01|1|P|2.5",
		"empty MSH-2":       "MSH||A|F|||20260101||ADT^A01|1|P|2.5",
		"no MSH-9":          "MSH|^~\\&|A|F|||20260101||",
		"empty MSH-9.1":     "MSH|^~\\&|A|F|||20260101||^A01|1|P|2.5",
		"batch without MSH": "FHS|^~\\&|A\rBHS|^~\\&|A\rBTS|0\rFTS|1",
		"PID first":         "PID|1||123\rMSH|^~\\&|A|F|||20260101||ADT^A01|1|P|2.5",
	}
	for name, in := range tests {
		if m, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: parsed as %+v, want ErrNotHL7", name, fieldsOf(m))
		} else if !errors.Is(err, ErrNotHL7) {
			t.Errorf("%s: %v is not ErrNotHL7", name, err)
		}
	}
}

func TestParseBatch(t *testing.T) {
	in := "FHS|^~\\&|LAB|ACME\rBHS|^~\\&|LAB|ACME\r" +
		string(oruMsg("20260815081500", "FIRST", "F", "1")) +
		"MSH|^~\\&|LAB|ACME|EHR|CLINIC|20260815081600||ORU^R01|SECOND|P|2.5.1\r" +
		"PID|1||999^^^ACME^MR\r" + obr("OTHER", "C") +
		"BTS|2\rFTS|1\r"
	m := mustParse(t, []byte(in))
	if !m.Batch || m.ControlID != "FIRST" || m.PatientID != "444333222" || m.FillerOrder != "LAB2233" || m.ResultStatus != "F" {
		t.Errorf("batch: want the first message, got %+v", fieldsOf(m))
	}
	// Two messages back to back without batch headers: a batch too, read from the first.
	two := string(oruMsg("1", "ONE", "", "1")) + "MSH|^~\\&|LAB|ACME|||2||ADT^A01|TWO|P|2.5\rPID|1||999\rOBX|1|||||||||C\r"
	m = mustParse(t, []byte(two))
	if !m.Batch || m.ControlID != "ONE" || m.PatientID != "444333222" || m.ResultStatus != "F" {
		t.Errorf("two messages: want the first, got %+v", fieldsOf(m))
	}
}

// obr is an OBR segment with OBR-3 order and OBR-25 status.
func obr(order, status string) string {
	return "OBR|1||" + order + strings.Repeat("|", 22) + status + "\r"
}

func TestParseResultStatus(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"OBR-25 wins over OBX-11", obr("O1", "F") + "OBX|1|NM|X||1||||||C\r", "F"},
		{"OBX before OBR still loses", "OBX|1|NM|X||1||||||C\r" + obr("O1", "P"), "P"},
		{"first non-empty OBX-11", "OBR|1||O1\rOBX|1|NM|X||1\rOBX|2|NM|X||1||||||\"\"\rOBX|3|NM|X||1||||||C\rOBX|4|NM|X||1||||||F\r", "C"},
		{"second OBR ignored", "OBR|1||O1\r" + obr("O2", "C"), ""},
		{"OBX-11 first component", "OBX|1|NM|X||1||||||C^corrected\r", "C"},
		{"none", "OBR|1||O1\r", ""},
	}
	for _, tt := range tests {
		m := mustParse(t, []byte("MSH|^~\\&|A|F|||20260101||ORU^R01|1|P|2.5\r"+tt.body))
		if m.ResultStatus != tt.want {
			t.Errorf("%s: status %q, want %q", tt.name, m.ResultStatus, tt.want)
		}
	}
}

func TestParseHugeOBX(t *testing.T) {
	// An 8 MiB base64 document in OBX-5, then the status in OBX-11.
	value := bytes.Repeat([]byte("QUJD"), 2<<20)
	msg := oruMsg("20260815081500", "BIG", "", string(value))
	m, err := parseWithin(t, "huge OBX-5", msg, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if m.ResultStatus != "F" || m.ControlID != "BIG" {
		t.Errorf("fields %+v", fieldsOf(m))
	}
}

func TestParsePathological(t *testing.T) {
	const n = 4 << 20
	head := "MSH|^~\\&|A|F|||20260101||ADT^A01|"
	tests := map[string][]byte{
		"escape chars":     []byte(head + strings.Repeat(`\`, n)),
		"escape pairs":     []byte(head + strings.Repeat(`\F`, n/2)),
		"hex escapes":      []byte(head + strings.Repeat(`\X41\`, n/5)),
		"field separators": []byte(head + strings.Repeat("|", n)),
		"components":       []byte(head + strings.Repeat("^", n)),
		"segment ends":     []byte(head + "1\r" + strings.Repeat("\r", n)),
		"CRLF pairs":       []byte(head + "1\r" + strings.Repeat("\r\n", n/2)),
		"empty OBX":        []byte(head + "1\r" + strings.Repeat("OBX\r", n/4)),
		"OBX no status":    []byte(head + "1\r" + strings.Repeat("OBX|1|2|3|4|5|6|7|8|9|10|\r", n/26)),
		"PID repeats":      []byte(head + "1\r" + strings.Repeat("PID|1||~~~~\r", n/12)),
		"long MSH-3":       []byte("MSH|^~\\&|" + strings.Repeat("A", n) + "|F|||1||ADT^A01|1"),
		"binary tail":      append([]byte(head+"1\r"), bytes.Repeat([]byte{0xff, 0x00, '|', '\r'}, n/4)...),
		"batch no MSH":     []byte("FHS|^~\\&\r" + strings.Repeat("BHS|^~\\&\r", n/9)),
	}
	for name, b := range tests {
		m, err := parseWithin(t, name, b, time.Minute)
		if err == nil {
			if len(m.ControlID) > maxShown || len(m.SendingApp) > maxShown || len(m.DedupeKey()) > maxKey {
				t.Errorf("%s: unbounded identifiers (control id %d bytes, key %d bytes)", name, len(m.ControlID), len(m.DedupeKey()))
			}
		}
	}
}
