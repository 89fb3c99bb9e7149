package hl7

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var testSalt = []byte("site-salt-for-tests")

func TestKeysResend(t *testing.T) {
	orig := mustParse(t, oruMsg("20260815081500", "MSG1", "F", "187"))
	resend := mustParse(t, oruMsg("20260816093000+0100", "MSG1", "F", "187"))
	if orig.DedupeKey() != resend.DedupeKey() {
		t.Errorf("DedupeKey: %q vs %q", orig.DedupeKey(), resend.DedupeKey())
	}
	if orig.ContentKey() != resend.ContentKey() {
		t.Error("a resend with only a new MSH-7 has another ContentKey")
	}
	// An empty MSH-7 counts as a send time too.
	if empty := mustParse(t, oruMsg("", "MSG1", "F", "187")); empty.ContentKey() != orig.ContentKey() {
		t.Error("empty MSH-7 changes the ContentKey")
	}
}

func TestKeysControlIDReused(t *testing.T) {
	a := mustParse(t, oruMsg("20260815081500", "MSG1", "F", "187"))
	b := mustParse(t, oruMsg("20260815081500", "MSG1", "F", "188"))
	if a.DedupeKey() != b.DedupeKey() {
		t.Errorf("same sender and control id, DedupeKey %q vs %q", a.DedupeKey(), b.DedupeKey())
	}
	if a.ContentKey() == b.ContentKey() {
		t.Error("other content, same ContentKey: the second message would be dropped")
	}
	// Another control id or another sender: another DedupeKey.
	c := mustParse(t, oruMsg("20260815081500", "MSG2", "F", "187"))
	other := bytes.Replace(oruMsg("20260815081500", "MSG1", "F", "187"), []byte("|ACME|"), []byte("|ACME2|"), 1)
	d := mustParse(t, other)
	if c.DedupeKey() == a.DedupeKey() || d.DedupeKey() == a.DedupeKey() {
		t.Error("different control id or facility share a DedupeKey")
	}
	// Bytes outside MSH-7 count, including the send time's neighbours.
	e := mustParse(t, bytes.Replace(oruMsg("20260815081500", "MSG1", "F", "187"), []byte("|P|"), []byte("|T|"), 1))
	if e.ContentKey() == a.ContentKey() {
		t.Error("MSH-11 change not seen by ContentKey")
	}
}

func TestKeysNoControlID(t *testing.T) {
	m := mustParse(t, oruMsg("20260815081500", "", "F", "187"))
	if m.DedupeKey() != "" {
		t.Errorf("DedupeKey = %q without MSH-10, want \"\" (spool's default rule)", m.DedupeKey())
	}
	if m.ContentKey() == "" {
		t.Error("ContentKey empty")
	}
	env := m.Envelope(testSalt)
	if env.DedupeKey != "" {
		t.Errorf("Envelope.DedupeKey = %q", env.DedupeKey)
	}
	noOrder := mustParse(t, []byte("MSH|^~\\&|A|F|||1||ADT^A01|X|P|2.5\rPID|1||123\r"))
	if noOrder.OrderKey() != "" {
		t.Errorf("OrderKey = %q without OBR-3", noOrder.OrderKey())
	}
}

func TestKeysCorrection(t *testing.T) {
	orig := mustParse(t, oruMsg("20260815081500", "MSG1", "F", "187"))
	corr := mustParse(t, oruMsg("20260815101500", "MSG2", "C", "178"))
	if orig.IsCorrection() || !corr.IsCorrection() {
		t.Errorf("IsCorrection: original %v, correction %v", orig.IsCorrection(), corr.IsCorrection())
	}
	if orig.OrderKey() == "" || orig.OrderKey() != corr.OrderKey() {
		t.Errorf("OrderKey: %q vs %q", orig.OrderKey(), corr.OrderKey())
	}
	if orig.DedupeKey() == corr.DedupeKey() {
		t.Error("correction shares the original's DedupeKey")
	}
	env := corr.Envelope(testSalt)
	if !env.IsCorrection || env.OrderKey != orig.OrderKey() {
		t.Errorf("Envelope: IsCorrection %v, OrderKey %q", env.IsCorrection, env.OrderKey)
	}
	// Status C only in OBX-11 (OBR-25 empty) is a correction too.
	obx := mustParse(t, []byte("MSH|^~\\&|A|F|||1||ORU^R01|M3|P|2.5\rOBR|1||O1\rOBX|1|NM|X||1||||||C\r"))
	if !obx.IsCorrection() {
		t.Error("OBX-11 C not a correction")
	}
	// Another sender's order of the same number is another order.
	other := mustParse(t, bytes.Replace(oruMsg("1", "MSG1", "C", "1"), []byte("|LAB|"), []byte("|LAB2|"), 1))
	if other.OrderKey() == orig.OrderKey() {
		t.Error("OrderKey ignores the sender")
	}
}

func TestKeysUnambiguous(t *testing.T) {
	// \F\ decodes to '|': "A|B" + "C" must not meet "A" + "B|C".
	a := mustParse(t, []byte("MSH|^~\\&|A\\F\\B|C|||1||ADT^A01|X|P|2.5"))
	b := mustParse(t, []byte("MSH|^~\\&|A|B\\F\\C|||1||ADT^A01|X|P|2.5"))
	if a.DedupeKey() == b.DedupeKey() {
		t.Errorf("ambiguous DedupeKey %q", a.DedupeKey())
	}
	long := mustParse(t, []byte("MSH|^~\\&|A|F|||1||ADT^A01|"+strings.Repeat("9", 10000)+"|P|2.5"))
	long2 := mustParse(t, []byte("MSH|^~\\&|A|F|||1||ADT^A01|"+strings.Repeat("9", 9999)+"8|P|2.5"))
	k := long.DedupeKey()
	if len(k) > maxKey || !strings.HasPrefix(k, "hl7|sha256:") || k == long2.DedupeKey() {
		t.Errorf("long control ids: keys %q and %q", k, long2.DedupeKey())
	}
}

func TestEnvelopeData(t *testing.T) {
	m := mustParse(t, oruMsg("20260815081500", "MSG1", "C", "187"))
	env := m.Envelope(testSalt)
	if env.ContentType != ContentType {
		t.Errorf("ContentType = %q", env.ContentType)
	}
	got := roundTrip(t, env.Data)
	want := map[string]any{
		"message_type":        "ORU^R01",
		"control_id":          "MSG1",
		"sending_application": "LAB",
		"sending_facility":    "ACME",
		"version":             "2.5.1",
		"filler_order":        "LAB2233",
		"result_status":       "C",
		"patient":             PatientHMAC(testSalt, "444333222"),
		"sent_at":             "20260815081500",
		"observed_start":      "20260813071500", // OBR-7
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("data.%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("data has %d keys, want %d: %v", len(got), len(want), got)
	}
	p, _ := got["patient"].(string)
	if len(p) != 64 || p == "444333222" || strings.Contains(jsonOf(t, env.Data), "444333222") {
		t.Errorf("patient %q is not a keyed hash of PID-3 only", p)
	}
	if PatientHMAC([]byte("other salt"), "444333222") == p {
		t.Error("HMAC does not depend on the salt")
	}

	// Without a salt nothing linkable is sent.
	bare := roundTrip(t, m.Envelope(nil).Data)
	if _, ok := bare["patient"]; ok {
		t.Errorf("patient present without a salt: %v", bare["patient"])
	}
}

// TestEnvelopeNoPatientData checks every corpus message: its patient id, name
// and birth date appear nowhere in the envelope.
func TestEnvelopeNoPatientData(t *testing.T) {
	files := corpus(t, "fhir-converter")
	checked, skipped := 0, 0
	for _, name := range sortedNames(files) {
		b := files[name]
		m := mustParse(t, b)
		env := m.Envelope(testSalt)
		keys := env.DedupeKey + "\n" + env.OrderKey + "\n" + env.ContentKey
		data := jsonOf(t, env.Data)
		values := roundTrip(t, env.Data)
		pid := segment(b, "PID", m.Delims)
		if pid == nil {
			continue
		}
		checked++
		msh := strings.Join(segment(b, "MSH", m.Delims), string(m.Delims.Field))
		for _, secret := range []string{field(pid, 3), first(field(pid, 3), m.Delims), field(pid, 5),
			first(field(pid, 5), m.Delims), first(field(pid, 7), m.Delims)} {
			if secret == "" {
				continue
			}
			if strings.Contains(msh, secret) {
				// Test data reuses strings: "PROSOLV" is both the sending
				// application and the patient's family name.
				skipped++
				continue
			}
			if len(secret) >= 5 {
				if strings.Contains(data, secret) || strings.Contains(keys, secret) {
					t.Errorf("%s: %q from PID appears in the envelope", name, secret)
				}
				continue
			}
			// Short ids ("14") occur inside timestamps by chance: no value may be one.
			for k, v := range values {
				if v == secret {
					t.Errorf("%s: data.%s is the PID value %q", name, k, secret)
				}
			}
		}
		if values["patient"] == m.PatientID {
			t.Errorf("%s: patient is the raw id", name)
		}
	}
	if checked < 100 || skipped > 30 {
		t.Errorf("%d corpus messages had a PID, %d values skipped as also in MSH", checked, skipped)
	}
}

// segment returns the first segment's fields, read without the parser.
func segment(b []byte, name string, d Delimiters) []string {
	b = bytes.TrimPrefix(b, bom)
	for _, line := range strings.FieldsFunc(string(b), func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.HasPrefix(line, name+string(d.Field)) {
			return strings.Split(line, string(d.Field))
		}
	}
	return nil
}

func field(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func first(v string, d Delimiters) string {
	v, _, _ = strings.Cut(v, string(d.Repetition))
	v, _, _ = strings.Cut(v, string(d.Component))
	return v
}

func TestInspector(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	msg := oruMsg("20260815081500", "MSG1", "F", "187")
	hl7 := write("a.hl7", msg)
	withBOM := write("bom.hl7", append(append([]byte{}, bom...), msg...))
	pdf := write("x.pdf", []byte("%PDF-1.7\n"))
	empty := write("empty", nil)
	garbage := write("g.hl7", []byte("MSH0000|||"))
	big := write("big.hl7", append(bytes.Clone(msg), bytes.Repeat([]byte("NTE|1||x\r"), 200)...))

	inspect := Inspector(testSalt, 1024)
	env := inspect(hl7)
	if env == nil {
		t.Fatal("HL7 file: nil envelope")
	}
	want := mustParse(t, msg).Envelope(testSalt)
	if env.DedupeKey != want.DedupeKey || env.ContentKey != want.ContentKey || env.OrderKey != want.OrderKey ||
		env.ContentType != ContentType || jsonOf(t, env.Data) != jsonOf(t, want.Data) {
		t.Errorf("inspector envelope %+v, want %+v", env, want)
	}
	if e := inspect(withBOM); e == nil || e.ContentKey != want.ContentKey {
		t.Errorf("BOM file: %+v", e)
	}
	for name, path := range map[string]string{
		"pdf": pdf, "empty": empty, "garbage": garbage, "over maxBytes": big,
		"missing": filepath.Join(dir, "nope"), "directory": dir,
	} {
		if e := inspect(path); e != nil {
			t.Errorf("%s: envelope %+v, want nil", name, e)
		}
	}
	// The default limit takes the big file.
	if Inspector(testSalt, 0)(big) == nil {
		t.Error("default limit: nil for a 2 KiB message")
	}
}

func TestInspectorCorpus(t *testing.T) {
	dir := t.TempDir()
	inspect := Inspector(testSalt, 0)
	for sub, wantAll := range map[string]bool{"fhir-converter": true, "nhapi-bad-inputs": false} {
		files := corpus(t, sub)
		for _, name := range sortedNames(files) {
			p := filepath.Join(dir, strings.ReplaceAll(name, ",", "_"))
			if err := os.WriteFile(p, files[name], 0o600); err != nil {
				t.Fatal(err)
			}
			env := inspect(p)
			if wantAll && env == nil {
				t.Errorf("%s/%s: nil envelope", sub, name)
			}
			if env != nil && !json.Valid([]byte(jsonOf(t, env.Data))) {
				t.Errorf("%s/%s: invalid JSON", sub, name)
			}
		}
	}
}

func TestLooksLikeHL7(t *testing.T) {
	for in, want := range map[string]bool{
		"MSH|^~": true, "\xef\xbb\xbfMSH|": true, "\x0bMSH|": true, "FHS|^~": true, "BHS|^": true,
		"MS": false, "": false, " MSH|": false, "%PDF": false, "\xef\xbb\xbf\x0bMSH": true,
	} {
		if got := LooksLikeHL7([]byte(in)); got != want {
			t.Errorf("LooksLikeHL7(%q) = %v", in, got)
		}
	}
}

// jsonOf is v as JSON text.
func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(b)
}
