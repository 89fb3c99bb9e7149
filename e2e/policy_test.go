package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/testutil"
)

// TestRejectedAndDuplicate: a file over max_size is moved aside with a reason and
// announced as rejected; the same bytes dropped again are announced as a
// duplicate of the first and not uploaded twice.
func TestRejectedAndDuplicate(t *testing.T) {
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url(), MaxSize: "1MiB"})
	e.startAgent()

	big := randBytes(2<<20, 21)
	writeFile(t, filepath.Join(e.inbox, "too-big.bin"), big)
	first := []byte("the same lab report twice\n")
	writeFile(t, filepath.Join(e.inbox, "a.txt"), first)
	e.waitVerified(1, time.Minute)
	writeFile(t, filepath.Join(e.inbox, "again.txt"), first)

	var rejected, dup event
	testutil.WaitFor(t, time.Minute, "rejected and duplicate events", func() bool {
		for _, ev := range e.readEvents() {
			switch ev.Type {
			case "org.edgecourier.file.rejected.v1":
				rejected = ev
			case "org.edgecourier.file.duplicate.v1":
				dup = ev
			}
		}
		return rejected.ID != "" && dup.ID != ""
	})
	if !strings.Contains(rejected.Data.Reason, "max_size") {
		t.Errorf("rejected event reason %q does not name max_size", rejected.Data.Reason)
	}
	moved := filepath.Join(e.inbox, ".courier-rejected", "too-big.bin")
	if b, err := os.ReadFile(moved); err != nil || len(b) != len(big) {
		t.Errorf("rejected file not kept at %s: %v", moved, err)
	}
	if r, err := os.ReadFile(moved + ".reason.txt"); err != nil || !strings.Contains(string(r), "max_size") {
		t.Errorf("reason file: %v %q", err, r)
	}
	orig := e.verified()[sum(first)]
	if dup.Data.DuplicateOf != orig.Data.FileID {
		t.Errorf("duplicate_of = %q, want the first item %q", dup.Data.DuplicateOf, orig.Data.FileID)
	}
	if n := len(in.objects(t)); n != 1 {
		t.Errorf("server holds %d objects, want 1 (a duplicate must not be uploaded)", n)
	}
	assertOneEventPerFile(t, e, first)
}

// TestHL7ResendAndCorrection drives the HL7 rules from the outside with a real
// corpus message: a resend with a new MSH-7 is a duplicate; a reused control id
// with other content is uploaded and flagged; no patient id leaks into events.
func TestHL7ResendAndCorrection(t *testing.T) {
	msg, err := os.ReadFile("../../shared/corpus/hl7/fhir-converter/ORU-R01-01.hl7")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("shared corpus not beside the repository")
		}
		t.Fatal(err)
	}
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url()})
	salt := filepath.Join(e.root, "salt")
	os.WriteFile(salt, []byte("site-secret"), 0o600)
	os.WriteFile(e.cfgPath, append(mustRead(t, e.cfgPath), []byte("privacy:\n  id_salt_file: "+salt+"\n")...), 0o644)
	e.startAgent()

	writeFile(t, filepath.Join(e.inbox, "m1.hl7"), msg)
	e.waitVerified(1, time.Minute)
	resend := replaceMSH7(t, msg, "20991231235959")
	writeFile(t, filepath.Join(e.inbox, "m2.hl7"), resend)
	other := append(append([]byte{}, msg...), []byte("NTE|1||an extra note\r")...)
	writeFile(t, filepath.Join(e.inbox, "m3.hl7"), other)

	var dup event
	testutil.WaitFor(t, time.Minute, "duplicate event for the resend and a verified event for the changed message", func() bool {
		for _, ev := range e.readEvents() {
			if ev.Type == "org.edgecourier.file.duplicate.v1" {
				dup = ev
			}
		}
		_, ok := e.verified()[sum(other)]
		return dup.ID != "" && ok
	})
	changed := e.verified()[sum(other)]
	var h struct {
		MessageType     string `json:"message_type"`
		ControlID       string `json:"control_id"`
		Patient         string `json:"patient"`
		ControlIDReused bool   `json:"control_id_reused"`
	}
	if err := json.Unmarshal(changed.Data.HL7, &h); err != nil {
		t.Fatalf("hl7 part of the event: %v: %s", err, changed.raw)
	}
	if !h.ControlIDReused {
		t.Errorf("changed message with a known control id: control_id_reused = false")
	}
	if h.MessageType != "ORU^R01" {
		t.Errorf("message_type = %q", h.MessageType)
	}
	if len(changed.Data.FHIR) == 0 || !strings.Contains(string(changed.Data.FHIR), "DocumentReference") {
		t.Errorf("verified HL7 event has no FHIR DocumentReference: %s", changed.raw)
	}
	pid := pid3(msg)
	if pid == "" {
		t.Fatal("corpus message has no PID-3")
	}
	for _, ev := range e.readEvents() {
		var doc any
		json.Unmarshal([]byte(ev.raw), &doc)
		if v := findString(doc, pid); v != "" {
			t.Errorf("event %s carries the raw patient id %q in value %q", ev.ID, pid, v)
		}
	}
}

// findString returns a string value in a JSON document that equals or holds the
// identifier as a ^-separated component (how HL7 ids travel), "" if none.
func findString(doc any, id string) string {
	switch v := doc.(type) {
	case string:
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == '^' || r == '|' || r == '&' }) {
			if part == id {
				return v
			}
		}
	case map[string]any:
		for _, x := range v {
			if s := findString(x, id); s != "" {
				return s
			}
		}
	case []any:
		for _, x := range v {
			if s := findString(x, id); s != "" {
				return s
			}
		}
	}
	return ""
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replaceMSH7 swaps the message's send time (a resend).
func replaceMSH7(t *testing.T, msg []byte, ts string) []byte {
	s := string(msg)
	i := strings.Index(s, "MSH")
	end := strings.IndexAny(s[i:], "\r\n")
	if end < 0 {
		end = len(s) - i
	}
	fields := strings.Split(s[i:i+end], "|")
	if len(fields) < 7 {
		t.Fatalf("corpus message has a short MSH")
	}
	fields[6] = ts // MSH-7 (MSH-1 is the separator itself)
	return []byte(s[:i] + strings.Join(fields, "|") + s[i+end:])
}

func pid3(msg []byte) string {
	for _, seg := range strings.FieldsFunc(string(msg), func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.HasPrefix(seg, "PID|") {
			f := strings.Split(seg, "|")
			if len(f) > 3 {
				return strings.Split(f[3], "^")[0]
			}
		}
	}
	return ""
}

// TestConfigValidateNamesTheKey: clinic IT gets exit 2 and FILE: KEY: PROBLEM.
func TestConfigValidateNamesTheKey(t *testing.T) {
	e := newEnv(t, agentConf{Endpoint: "http://127.0.0.1:1/files/"})
	bad := filepath.Join(e.root, "bad.yaml")
	os.WriteFile(bad, []byte(`agent: { id: x, data_dir: /tmp/x }
upload: { endpoint: "ftp://nope" }
sources:
  - { name: a, kind: folder, path: /tmp, settle: -2s }
`), 0o644)
	out, code := e.courier("config", "validate", bad)
	if code != 2 {
		t.Errorf("exit %d, want 2\n%s", code, out)
	}
	for _, want := range []string{bad + ": upload.endpoint:", bad + ": sources[0].settle:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not contain %q:\n%s", want, out)
		}
	}
	if out, code := e.courier("config", "validate", e.cfgPath); code != 0 {
		t.Errorf("a valid config: exit %d\n%s", code, out)
	}
	if out, code := e.courier("run", "--config", bad); code != 2 {
		t.Errorf("courier run with an invalid config: exit %d, want 2\n%s", code, out)
	}
}

// TestDevCommand is the README's promise: `courier dev`, drop a file into the
// inbox, see its verified event in events.jsonl.
func TestDevCommand(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreePort(t)
	start(t, "courier dev", bin.courier, "dev", "--dir", dir, "--listen", addr)
	inbox := filepath.Join(dir, "inbox")
	testutil.WaitFor(t, 30*time.Second, "the dev inbox", func() bool { _, err := os.Stat(inbox); return err == nil })
	body := []byte("%PDF-1.4\nhello from the dev command\n")
	writeFile(t, filepath.Join(inbox, "hello.pdf"), body)
	e := &env{t: t, events: filepath.Join(dir, "events.jsonl")}
	ev := e.waitVerified(1, time.Minute)[sum(body)]
	if ev.Data.ContentType != "application/pdf" {
		t.Errorf("content type %q, want application/pdf (sniffed from the bytes)", ev.Data.ContentType)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "objects", ev.Data.FileID)); err != nil || string(b) != string(body) {
		t.Errorf("object in %s/objects: %v", dir, err)
	}
}

// TestQuarantineAndRetry: a file the server refuses for itself (413 over the
// ingest's --max-size) is quarantined with an event, not retried forever; once
// the server is fixed, `courier spool retry --state quarantined` sends it.
func TestQuarantineAndRetry(t *testing.T) {
	skipOnWindows(t)
	store := t.TempDir()
	addr := testutil.FreePort(t)
	strict := start(t, "courier-ingest (max-size)", bin.ingest, "--listen", addr, "--store", "file://"+store, "--max-size", "1000")
	in := &ingest{proc: strict, addr: addr, store: store}
	waitListening(t, addr)
	e := newEnv(t, agentConf{Endpoint: in.url()})
	e.startAgent()
	body := randBytes(5000, 55)
	writeFile(t, filepath.Join(e.inbox, "big-for-this-server.bin"), body)

	var q event
	testutil.WaitFor(t, time.Minute, "a quarantined event", func() bool {
		for _, ev := range e.readEvents() {
			if ev.Type == "org.edgecourier.file.quarantined.v1" {
				q = ev
			}
		}
		return q.ID != ""
	})
	if !strings.Contains(q.Data.Reason, "413") {
		t.Errorf("quarantine reason %q does not name the server's 413", q.Data.Reason)
	}
	out, code := e.courier("status", "--config", e.cfgPath)
	if code != 1 || !strings.Contains(out, "quarantined") { // 1: degraded, a person is needed
		t.Fatalf("courier status: exit %d\n%s", code, out)
	}

	strict.kill()
	startIngest(t, store, addr)
	out, code = e.courier("spool", "retry", "--config", e.cfgPath, "--state", "quarantined")
	if code != 0 || !strings.Contains(out, "1 item(s) queued again") {
		t.Fatalf("spool retry: exit %d\n%s", code, out)
	}
	ev := e.waitVerified(1, 2*time.Minute)[sum(body)]
	if ev.Data.FileID != q.Data.FileID {
		t.Errorf("verified file id %q, want the quarantined item %q", ev.Data.FileID, q.Data.FileID)
	}
	if stored := in.object(t, ev.Data.FileID); !bytes.Equal(stored, body) {
		t.Errorf("bytes at the server differ")
	}
}
