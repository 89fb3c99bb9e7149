package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/testutil"
)

var bin struct {
	courier, ingest string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "courier-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin.courier = filepath.Join(dir, "courier")
	bin.ingest = filepath.Join(dir, "courier-ingest")
	for out, pkg := range map[string]string{bin.courier: "../cmd/courier", bin.ingest: "../cmd/courier-ingest"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a child process whose output is kept for failure messages.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{}
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startEnv(t, name, nil, args...)
}

// startEnv starts a child with extra environment variables (credentials).
func startEnv(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s", name, tail(p.out.String(), 6000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// kill sends SIGKILL: no shutdown code runs, as in a power cut.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks for a clean shutdown.
func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("%s did not stop within 30s of SIGINT", p.name)
		p.kill()
	}
}

// ingest is a running courier-ingest with a file store.
type ingest struct {
	*proc
	addr  string
	store string
}

func startIngest(t *testing.T, store, addr string) *ingest {
	t.Helper()
	if addr == "" {
		addr = testutil.FreePort(t)
	}
	p := start(t, "courier-ingest", bin.ingest, "--listen", addr, "--store", "file://"+store)
	in := &ingest{proc: p, addr: addr, store: store}
	testutil.WaitFor(t, 30*time.Second, "courier-ingest to answer", func() bool {
		req, _ := http.NewRequest(http.MethodOptions, in.url(), nil)
		req.Header.Set("Tus-Resumable", "1.0.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode < 300
	})
	return in
}

func (in *ingest) url() string { return "http://" + in.addr + "/files/" }

// object returns the stored bytes of a file id.
func (in *ingest) object(t *testing.T, id string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(in.store, id))
	if err != nil {
		t.Fatalf("object %s at the server: %v", id, err)
	}
	return b
}

// objects counts stored objects (not .info or state files).
func (in *ingest) objects(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(in.store)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range ents {
		if !e.IsDir() && !strings.Contains(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// env is one agent's world: its dirs and config.
type env struct {
	t       *testing.T
	root    string
	inbox   string
	data    string
	events  string
	cfgPath string
}

type agentConf struct {
	Endpoint  string
	Chunk     string // e.g. 256KiB
	Bandwidth string // bytes/s, "" = 0
	After     string
	Settle    string
	MaxSize   string
	Sources   string // more entries of the sources list
	Extra     string // appended YAML
}

func newEnv(t *testing.T, c agentConf) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{t: t, root: root, inbox: filepath.Join(root, "inbox"), data: filepath.Join(root, "data"),
		events: filepath.Join(root, "events.jsonl"), cfgPath: filepath.Join(root, "courier.yaml")}
	os.MkdirAll(e.inbox, 0o755)
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	cfg := fmt.Sprintf(`agent:
  id: e2e-agent
  data_dir: %s
upload:
  endpoint: %s
  chunk_size: %s
  concurrency: 2
  bandwidth_limit: %s
  retry: { initial: 200ms, max: 2s, max_attempts: 10 }
spool:
  min_free_disk: 1MiB
sources:
  - name: inbox
    kind: folder
    path: %s
    settle: %s
    rescan: 2s
    after: %s
    max_size: %s
%sevents:
  file: %s
http:
  listen: "off"
log:
  level: debug
  format: text
%s`, e.data, c.Endpoint, def(c.Chunk, "256KiB"), def(c.Bandwidth, "0"), e.inbox, def(c.Settle, "500ms"),
		def(c.After, "delete"), def(c.MaxSize, "1GiB"), c.Sources, e.events, c.Extra)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) startAgent() *proc {
	e.t.Helper()
	return start(e.t, "courier run", bin.courier, "run", "--config", e.cfgPath)
}

// courier runs a CLI command to completion.
func (e *env) courier(args ...string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(bin.courier, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("courier %v: %v", args, err)
	}
	return string(out), code
}

type event struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Subject string `json:"subject"`
	Source  string `json:"source"`
	Data    struct {
		FileID      string          `json:"file_id"`
		SHA256      string          `json:"sha256"`
		Size        int64           `json:"size"`
		ContentType string          `json:"content_type"`
		Location    string          `json:"location"`
		Filename    string          `json:"filename"`
		Reason      string          `json:"reason"`
		DuplicateOf string          `json:"duplicate_of"`
		HL7         json.RawMessage `json:"hl7"`
		FHIR        json.RawMessage `json:"fhir"`
	} `json:"data"`
	raw string
}

func (e *env) readEvents() []event {
	e.t.Helper()
	f, err := os.Open(e.events)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var evs []event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			e.t.Fatalf("events file has a line that is not JSON: %v: %q", err, sc.Text())
		}
		ev.raw = sc.Text()
		evs = append(evs, ev)
	}
	return evs
}

// verified returns the distinct verified events by sha256.
func (e *env) verified() map[string]event {
	out := map[string]event{}
	for _, ev := range e.readEvents() {
		if ev.Type == "org.edgecourier.file.verified.v1" {
			out[ev.Data.SHA256] = ev
		}
	}
	return out
}

func (e *env) waitVerified(n int, timeout time.Duration) map[string]event {
	e.t.Helper()
	var got map[string]event
	testutil.WaitFor(e.t, timeout, fmt.Sprintf("%d verified events", n), func() bool {
		got = e.verified()
		return len(got) >= n
	})
	return got
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func randBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write under an excluded name, then rename: how well-behaved exporters drop files.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".part")
	if len(filepath.Base(path)) > 200 {
		tmp = filepath.Join(filepath.Dir(path), ".x.part")
	}
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// proxy sits between agent and ingest on loopback: it counts PATCH body bytes
// and can corrupt one PATCH body, as a bad line or middlebox would.
type proxy struct {
	addr        string
	patchBytes  atomic.Int64
	corruptNext atomic.Bool
	corrupted   atomic.Int32
	status460   atomic.Int32
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	u, _ := url.Parse(target)
	p := &proxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // a dead upstream is what some tests make on purpose
	rp.ModifyResponse = func(r *http.Response) error {
		if r.StatusCode == 460 {
			p.status460.Add(1)
		}
		return nil
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch || (r.Method == http.MethodPost && r.ContentLength > 0) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			p.patchBytes.Add(int64(len(body)))
			if r.Method == http.MethodPatch && len(body) > 0 && p.corruptNext.CompareAndSwap(true, false) {
				body = append([]byte(nil), body...)
				body[len(body)/2] ^= 0x40
				p.corrupted.Add(1)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		rp.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.addr = ln.Addr().String()
	return p
}

func (p *proxy) url() string { return "http://" + p.addr + "/files/" }

func skipOnWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses POSIX signals")
	}
}

func writeText(t *testing.T, path, s string) {
	t.Helper()
	// 0600: the agent refuses key files that group or others can read.
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitListening waits until something accepts connections at addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "a listener at "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}
