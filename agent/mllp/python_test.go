package mllp

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecourier/courier/spool"
)

// python is Debian's interpreter: python-hl7 (package python3-hl7) is installed
// for it, not for a pyenv python3 that may come first on PATH.
const python = "/usr/bin/python3"

// needPythonHL7 skips without python-hl7 on a developer machine; in CI
// (`make test-deps` installs python3-hl7) its absence is a failure.
func needPythonHL7(t testing.TB) {
	t.Helper()
	if err := exec.Command(python, "-c", "import hl7.client").Run(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("python-hl7 not installed (apt-get install python3-hl7, or make test-deps)")
		}
		t.Fatalf("python-hl7 not installed but CI=%s: make test-deps installs python3-hl7", os.Getenv("CI"))
	}
	if _, err := exec.LookPath("mllp_send"); err != nil {
		t.Fatalf("python3-hl7 is installed but its mllp_send is not on PATH: %v", err)
	}
}

// sendScript sends each file given as one message with hl7.client.MLLPClient, reads
// the ACK, parses it with python-hl7's parser and prints one JSON line per message.
// Messages whose MSH-15/16 ask for no acknowledgement at all are sent without
// waiting. On a connection error it reconnects and sends the same message again
// (what an interface engine does), up to a bound.
const sendScript = `
import json, socket, sys, time
import hl7
from hl7.client import MLLPClient

host, port = sys.argv[1], int(sys.argv[2])
SB, EB = b"\x0b", b"\x1c\r"

def field(seg, n):
    try:
        return str(seg[n])
    except (IndexError, KeyError):
        return ""

def connect():
    for _ in range(600):
        try:
            c = MLLPClient(host, port)
            c.socket.settimeout(60)
            return c
        except OSError:
            time.sleep(0.05)
    raise SystemExit("cannot connect")

client = connect()
for path in sys.argv[3:]:
    data = open(path, "rb").read()
    msh = hl7.parse(data.decode("utf-8", "replace")).segment("MSH")
    none = field(msh, 15) == "NE" and field(msh, 16) in ("NE", "")
    for attempt in range(200):
        try:
            if none:
                client.socket.sendall(SB + data + EB)
                raw = b""
            else:
                raw = client.send_message(data)
                while not raw.endswith(EB):
                    more = client.socket.recv(4096)
                    if not more:
                        raise ConnectionError("closed before the whole ACK")
                    raw += more
            break
        except (OSError, ConnectionError):
            client.close()
            time.sleep(0.05)
            client = connect()
    else:
        raise SystemExit("gave up on " + path)
    out = {"file": path, "control": field(msh, 10), "ack": None}
    if raw:
        ack = hl7.parse(raw[1:-2].decode("utf-8"))
        a_msh, msa = ack.segment("MSH"), ack.segment("MSA")
        out["ack"] = {k: field(a_msh, n) for k, n in
                      (("MSH-3", 3), ("MSH-4", 4), ("MSH-5", 5), ("MSH-6", 6), ("MSH-9", 9),
                       ("MSH-10", 10), ("MSH-11", 11), ("MSH-12", 12))}
        out["ack"]["MSA-1"] = field(msa, 1)
        out["ack"]["MSA-2"] = field(msa, 2)
        out["want"] = {k: field(msh, n) for k, n in (("MSH-3", 3), ("MSH-4", 4), ("MSH-5", 5),
                       ("MSH-6", 6), ("MSH-11", 11), ("MSH-12", 12), ("MSH-15", 15), ("MSH-16", 16))}
        out["want"]["trigger"] = str(msh[9][0][1]) if len(msh[9][0]) > 1 else ""
    print(json.dumps(out), flush=True)
client.close()
`

type pyResult struct {
	File    string            `json:"file"`
	Control string            `json:"control"`
	ACK     map[string]string `json:"ack"`
	Want    map[string]string `json:"want"`
}

// runPython runs the MLLPClient script over files and returns one result per file.
func runPython(t testing.TB, addr string, files []string) []pyResult {
	t.Helper()
	script := filepath.Join(t.TempDir(), "send.py")
	if err := os.WriteFile(script, []byte(sendScript), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(python, append([]string{script, host, port}, files...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python MLLPClient: %v\n%s", err, stderr.String())
	}
	var res []pyResult
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r pyResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("python output %q: %v", line, err)
		}
		res = append(res, r)
	}
	return res
}

// writeMessages writes each message to a file of its own in a temp dir.
func writeMessages(t testing.TB, msgs map[string][]byte) []string {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for _, name := range sortedKeys(msgs) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, msgs[name], 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return files
}

// TestPythonHL7MLLPClient: python-hl7's hl7.client.MLLPClient sends the whole shared
// corpus on one connection; each ACK, parsed by python-hl7, answers its message as
// the standard says, and every message is in the spool exactly once, byte for byte.
func TestPythonHL7MLLPClient(t *testing.T) {
	needPythonHL7(t)
	w := newWorld(t, spool.Options{}, Options{})
	msgs := corpus(t)
	res := runPython(t, w.addr, writeMessages(t, msgs))
	if len(res) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(res), len(msgs))
	}
	noACK := 0
	for _, r := range res {
		if r.ACK == nil {
			noACK++
			continue
		}
		checkPyACK(t, r)
	}
	if noACK != 2 { // the corpus has two NE/NE messages
		t.Errorf("%d messages without ACK, want the 2 NE/NE ones", noACK)
	}
	checkStoredOnce(t, w, msgs)
}

func checkPyACK(t testing.TB, r pyResult) {
	t.Helper()
	a, m := r.ACK, r.Want
	want := "AA"
	switch m["MSH-15"] {
	case "AL", "SU":
		want = "CA"
	}
	trig := "ACK"
	if m["trigger"] != "" {
		trig += "^" + m["trigger"]
		if versionAtLeast(strings.SplitN(m["MSH-12"], "^", 2)[0], "2.3.1") {
			trig += "^ACK"
		}
	}
	for k, v := range map[string]string{"MSA-1": want, "MSA-2": r.Control, "MSH-3": m["MSH-5"], "MSH-4": m["MSH-6"],
		"MSH-5": m["MSH-3"], "MSH-6": m["MSH-4"], "MSH-9": trig, "MSH-11": m["MSH-11"], "MSH-12": m["MSH-12"]} {
		if a[k] != v {
			t.Errorf("%s: ACK %s = %q, want %q", filepath.Base(r.File), k, a[k], v)
		}
	}
	if len(a["MSH-10"]) != 20 || a["MSH-10"] == r.Control {
		t.Errorf("%s: ACK MSH-10 %q is not a fresh 20-character id", filepath.Base(r.File), a["MSH-10"])
	}
}

// checkStoredOnce: every message is a received item exactly once, nothing else is.
func checkStoredOnce(t testing.TB, w *world, msgs map[string][]byte) {
	t.Helper()
	got := w.stored()
	for name, b := range msgs {
		if n := got[digest(b)]; n != 1 {
			t.Errorf("%s: %d times in the spool, want once", name, n)
		}
	}
	if len(got) != len(msgs) {
		t.Errorf("%d distinct messages in the spool, want %d", len(got), len(msgs))
	}
	if its := w.items(""); len(its) != len(msgs) {
		t.Errorf("%d items in the spool, want %d (no duplicates, no rejections)", len(its), len(msgs))
	}
}

// TestPythonHL7MLLPSend: python-hl7's mllp_send command sends the corpus from one
// file of MLLP frames (its documented input) and prints each ACK; all are AA or
// CA and every message is in the spool once. (mllp_send waits for an ACK after
// every message, so the two NE/NE messages, which ask for none, are left out.)
func TestPythonHL7MLLPSend(t *testing.T) {
	needPythonHL7(t)
	w := newWorld(t, spool.Options{}, Options{})
	msgs := corpus(t)
	var stream bytes.Buffer
	sent := map[string][]byte{}
	for _, name := range sortedKeys(msgs) {
		h, _ := ParseHeader(msgs[name])
		if _, send := Decide(h, Accepted); !send {
			continue
		}
		stream.WriteByte(startBlock)
		stream.Write(msgs[name])
		stream.Write([]byte{endBlock, carriageR})
		// mllp_send strips CRs at both ends of each frame's content.
		sent[name] = bytes.TrimRight(msgs[name], "\r")
	}
	file := filepath.Join(t.TempDir(), "corpus.mllp")
	if err := os.WriteFile(file, stream.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(w.addr, ":")
	cmd := exec.Command("mllp_send", "--file", file, "--port", port, host)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("mllp_send did not finish: it waits for an ACK we did not send\n%s", out)
	}
	if err != nil {
		t.Fatalf("mllp_send: %v\n%s", err, out)
	}
	acks := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	if len(acks) != len(sent) {
		t.Fatalf("mllp_send printed %d ACKs for %d messages:\n%s", len(acks), len(sent), out)
	}
	for i, a := range acks {
		a = unframe(a)
		if code := ACKCode(a); code != "AA" && code != "CA" {
			t.Errorf("ACK %d: MSA-1 %q, want AA or CA: %q", i, code, a)
		}
	}
	checkStoredOnce(t, w, sent)
}
