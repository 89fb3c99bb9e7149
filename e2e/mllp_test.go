package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecourier/courier/agent/mllp"
	"github.com/edgecourier/courier/internal/testutil"
)

// The MLLP sender here is python-hl7 (Debian's python3-hl7): hl7.client.MLLPClient,
// driven by a few lines that do what an interface engine does — send, wait for the
// ACK, and on a broken connection reconnect and send the same message again.
const pythonHL7 = "/usr/bin/python3" // python3-hl7 is installed for Debian's python, not a pyenv one

const mllpSender = `
import json, sys, time
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
    for _ in range(1200):
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
    resent = 0
    while True:
        try:
            if none:
                client.socket.sendall(SB + data + EB)
                raw = b""
            else:
                raw = client.send_message(data)
                while not raw.endswith(EB):
                    more = client.socket.recv(4096)
                    if not more:
                        raise ConnectionError("closed")
                    raw += more
            break
        except (OSError, ConnectionError):
            resent += 1
            if resent > 100:
                raise SystemExit("gave up on " + path)
            client.close()
            time.sleep(0.05)
            client = connect()
    code = ""
    if raw:
        code = field(hl7.parse(raw[1:-2].decode("utf-8")).segment("MSA"), 1)
    print(json.dumps({"file": path, "code": code, "resent": resent}), flush=True)
client.close()
`

func needPythonHL7(t *testing.T) {
	t.Helper()
	if err := exec.Command(pythonHL7, "-c", "import hl7.client").Run(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("python-hl7 not installed (apt-get install python3-hl7, or make test-deps)")
		}
		t.Fatalf("python-hl7 not installed but CI=%s: make test-deps installs python3-hl7", os.Getenv("CI"))
	}
}

type sent struct {
	File   string `json:"file"`
	Code   string `json:"code"`
	Resent int    `json:"resent"`
}

// sender is a running python-hl7 client; acks collects one line per message.
type sender struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	acks []sent
	done chan error
	errb *testutil.SyncBuffer
}

func startSender(t *testing.T, addr string, files []string) *sender {
	t.Helper()
	script := filepath.Join(t.TempDir(), "sender.py")
	writeText(t, script, mllpSender)
	host, port, _ := strings.Cut(addr, ":")
	s := &sender{done: make(chan error, 1), errb: &testutil.SyncBuffer{}}
	s.cmd = exec.Command(pythonHL7, append([]string{script, host, port}, files...)...)
	s.cmd.Stderr = s.errb
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var a sent
			if json.Unmarshal(sc.Bytes(), &a) == nil {
				s.mu.Lock()
				s.acks = append(s.acks, a)
				s.mu.Unlock()
			}
		}
		io.Copy(io.Discard, out)
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() { s.cmd.Process.Kill() })
	return s
}

func (s *sender) snapshot() []sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sent(nil), s.acks...)
}

func (s *sender) wait(t *testing.T) []sent {
	t.Helper()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("python-hl7 sender: %v\n%s", err, s.errb.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("python-hl7 sender did not finish\n%s", s.errb.String())
	}
	return s.snapshot()
}

// mllpCorpus writes the shared corpus as MLLP carries it (CR segment ends, no BOM),
// one file per message; it returns the files and the SHA-256 of each message.
func mllpCorpus(t *testing.T, skipNoACK bool) ([]string, map[string]string) {
	t.Helper()
	paths, _ := filepath.Glob("../../shared/corpus/hl7/fhir-converter/*.hl7")
	if len(paths) == 0 {
		t.Fatal("no shared HL7 corpus (../shared/corpus/hl7 from the repository root)")
	}
	sort.Strings(paths)
	dir := t.TempDir()
	var files []string
	sums := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m := mllp.Normalize(b)
		if skipNoACK && !mllp.WantsACK(m) {
			continue
		}
		f := filepath.Join(dir, filepath.Base(p))
		writeText(t, f, string(m))
		files = append(files, f)
		sums[f] = sum(m)
	}
	return files, sums
}

func mllpEnv(t *testing.T, endpoint, addr string) *env {
	return newEnv(t, agentConf{Endpoint: endpoint, Sources: fmt.Sprintf(`  - name: lab-feed
    kind: mllp
    listen: %s
    priority: high
`, addr)})
}

type mllpEvent struct {
	Type string `json:"type"`
	Data struct {
		FileID string `json:"file_id"`
		SHA256 string `json:"sha256"`
		Source struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"source"`
		HL7         map[string]any `json:"hl7"`
		FHIR        map[string]any `json:"fhir"`
		DuplicateOf string         `json:"duplicate_of"`
	} `json:"data"`
}

func (e *env) mllpEvents() []mllpEvent {
	e.t.Helper()
	var out []mllpEvent
	for _, ev := range e.readEvents() {
		var m mllpEvent
		if err := json.Unmarshal([]byte(ev.raw), &m); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// checkVerifiedOnce: every message is verified as exactly one item (by sha256), as
// an mllp item with hl7 and fhir, and its bytes at the server are the bytes sent.
func checkVerifiedOnce(t *testing.T, e *env, in *ingest, sums map[string]string) {
	t.Helper()
	want := map[string]bool{}
	for _, s := range sums {
		want[s] = true
	}
	var evs []mllpEvent
	testutil.WaitFor(t, 3*time.Minute, fmt.Sprintf("%d verified events", len(want)), func() bool {
		evs = nil
		for _, ev := range e.mllpEvents() {
			if ev.Type == "org.edgecourier.file.verified.v1" {
				evs = append(evs, ev)
			}
		}
		return len(evs) >= len(want)
	})
	time.Sleep(time.Second) // a second verified event for anything would show up now
	evs = nil
	for _, ev := range e.mllpEvents() {
		if ev.Type == "org.edgecourier.file.verified.v1" {
			evs = append(evs, ev)
		}
	}
	// A redelivered event (the agent killed after the sink took it, before it was
	// marked published) has the same id: consumers drop it. Distinct items count.
	seen := map[string]int{}
	ids := map[string]bool{}
	for _, ev := range evs {
		if ids[ev.Data.FileID] {
			continue
		}
		ids[ev.Data.FileID] = true
		seen[ev.Data.SHA256]++
		if !want[ev.Data.SHA256] {
			t.Errorf("verified event for something not sent: %s", ev.Data.SHA256)
			continue
		}
		if ev.Data.Source.Kind != "mllp" || ev.Data.Source.Name != "lab-feed" {
			t.Errorf("event %s: source %+v, want lab-feed/mllp", ev.Data.FileID, ev.Data.Source)
		}
		if ev.Data.HL7["message_type"] == nil || ev.Data.FHIR["resourceType"] != "DocumentReference" {
			t.Errorf("event %s: hl7 %v fhir %v", ev.Data.FileID, ev.Data.HL7 != nil, ev.Data.FHIR["resourceType"])
		}
		if b := in.object(t, ev.Data.FileID); sum(b) != ev.Data.SHA256 {
			t.Errorf("object %s at the server differs from the message", ev.Data.FileID)
		}
	}
	for s := range want {
		if seen[s] != 1 {
			t.Errorf("message %.12s: verified as %d items, want 1", s, seen[s])
		}
	}
}

// TestMLLPCorpusVerifiedOnce is issue 14's interface analyst: a lab system's MLLP
// output (python-hl7 sending the shared corpus) pointed at `courier run`; each
// message is acknowledged AA/CA (the two NE/NE ones ask for nothing) and verified at
// a real courier-ingest exactly once. Sent again with `courier mllp send`, two of
// them are acknowledged AA and reported as duplicates, not uploaded twice.
func TestMLLPCorpusVerifiedOnce(t *testing.T) {
	needPythonHL7(t)
	in := startIngest(t, t.TempDir(), "")
	addr := testutil.FreePort(t)
	e := mllpEnv(t, in.url(), addr)
	e.startAgent()
	waitListening(t, addr)
	files, sums := mllpCorpus(t, false)
	acks := startSender(t, addr, files).wait(t)
	if len(acks) != len(files) {
		t.Fatalf("%d results for %d messages", len(acks), len(files))
	}
	for _, a := range acks {
		if a.Code != "AA" && a.Code != "CA" && !(a.Code == "" && !wantsACK(t, a.File)) {
			t.Errorf("%s: ACK %q", filepath.Base(a.File), a.Code)
		}
	}
	checkVerifiedOnce(t, e, in, sums)

	out, code := e.courier("mllp", "send", "--to", addr, files[0], files[1])
	if code != 0 || strings.Count(out, ": AA\n")+strings.Count(out, ": CA\n") != 2 {
		t.Fatalf("courier mllp send: exit %d\n%s", code, out)
	}
	testutil.WaitFor(t, time.Minute, "2 duplicate events", func() bool {
		n := 0
		for _, ev := range e.mllpEvents() {
			if ev.Type == "org.edgecourier.file.duplicate.v1" && ev.Data.DuplicateOf != "" {
				n++
			}
		}
		return n == 2
	})
	if got := len(in.objects(t)); got != len(files) {
		t.Errorf("%d objects at the server, want %d", got, len(files))
	}
}

func wantsACK(t *testing.T, path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return mllp.WantsACK(b)
}

type spoolItem struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	SHA256 string `json:"sha256"`
}

// TestMLLPSIGKILLMidStream: the agent is killed (SIGKILL) while python-hl7 sends the
// corpus. Every message the sender saw acknowledged is in the spool when the agent
// is down; the sender reconnects to the restarted agent and resends what was not
// acknowledged; in the end every message is verified exactly once (a resend of one
// that was stored but not acknowledged is a duplicate).
func TestMLLPSIGKILLMidStream(t *testing.T) {
	skipOnWindows(t)
	needPythonHL7(t)
	in := startIngest(t, t.TempDir(), "")
	addr := testutil.FreePort(t)
	e := mllpEnv(t, in.url(), addr)
	agent := e.startAgent()
	waitListening(t, addr)
	files, sums := mllpCorpus(t, true) // NE/NE messages ask for no ACK: nothing to count
	s := startSender(t, addr, files)
	testutil.WaitFor(t, time.Minute, "20 acknowledged messages", func() bool { return len(s.snapshot()) >= 20 })
	agent.kill()
	acked := s.snapshot()
	out, code := e.courier("spool", "ls", "--config", e.cfgPath, "--json")
	if code != 0 {
		t.Fatalf("spool ls: %d\n%s", code, out)
	}
	var items []spoolItem
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("spool ls --json: %v\n%s", err, out)
	}
	held := map[string]bool{}
	for _, it := range items {
		if it.State != "rejected" && it.State != "duplicate" {
			held[it.SHA256] = true
		}
	}
	for _, a := range acked {
		if a.Code != "AA" && a.Code != "CA" {
			t.Errorf("%s: ACK %q", filepath.Base(a.File), a.Code)
		}
		if !held[sums[a.File]] {
			t.Errorf("%s was acknowledged but is not in the spool after SIGKILL", filepath.Base(a.File))
		}
	}
	t.Logf("SIGKILL after %d acknowledged messages (of %d); %d items in the spool", len(acked), len(files), len(held))
	if len(acked) == len(files) {
		t.Fatal("the sender finished before the kill: nothing was mid-stream")
	}

	e.startAgent()
	final := s.wait(t)
	resent := 0
	for _, a := range final {
		resent += a.Resent
	}
	t.Logf("the sender resent %d message(s) after the kill", resent)
	if resent == 0 {
		t.Error("the sender never had to resend: the kill did not cut a connection")
	}
	checkVerifiedOnce(t, e, in, sums)
}
