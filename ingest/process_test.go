package ingest

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildIngest builds cmd/courier-ingest once per test binary.
var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildDir  string
)

func ingestBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: does not build and run the courier-ingest binary")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "courier-ingest-bin-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "courier-ingest")
		cmd := exec.Command("go", "build", "-o", buildPath, "../cmd/courier-ingest")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building courier-ingest: %v", buildErr)
	}
	return buildPath
}

// ingestProc is a running courier-ingest process.
type ingestProc struct {
	cmd  *exec.Cmd
	base string // http(s)://host:port
	// metricsBase is http://host:port of --metrics-listen, if given.
	metricsBase string
	done        chan struct{}
	mu          sync.Mutex
	log         strings.Builder
}

// startIngest runs courier-ingest with args plus --listen 127.0.0.1:0 and
// waits until it says where it listens.
func startIngest(t *testing.T, env []string, args ...string) *ingestProc {
	t.Helper()
	bin := ingestBinary(t)
	cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start courier-ingest: %v", err)
	}
	p := &ingestProc{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
				TLS  bool   `json:"tls"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "metrics listening" {
				p.mu.Lock()
				p.metricsBase = "http://" + rec.Addr
				p.mu.Unlock()
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				scheme := "http"
				if rec.TLS {
					scheme = "https"
				}
				addr <- scheme + "://" + rec.Addr
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() { p.kill(t) })
	select {
	case p.base = <-addr:
	case <-p.done:
		t.Fatalf("courier-ingest exited before listening:\n%s", p.logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("courier-ingest did not listen within 60s:\n%s", p.logs())
	}
	return p
}

func (p *ingestProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *ingestProc) kill(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("courier-ingest did not die after SIGKILL")
	}
}

func (p *ingestProc) client(c *http.Client) *testServer {
	if c == nil {
		c = &http.Client{Timeout: 60 * time.Second}
	}
	return &testServer{url: p.base + "/files/", c: c}
}

var metricLine = regexp.MustCompile(`(?m)^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$`)

// scrape reads one sample of /metrics.
func scrape(t *testing.T, c *http.Client, base, name string) float64 {
	t.Helper()
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range metricLine.FindAllStringSubmatch(string(body), -1) {
		if m[1] == name {
			v, _ := strconv.ParseFloat(m[2], 64)
			return v
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

func TestBinarySurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	store := "file://" + dir
	p := startIngest(t, nil, "--store", store)
	cl := p.client(nil)
	cl.t = t
	u := newUpload(3<<20 + 17)
	loc := cl.create(u)
	cl.sendChunks(loc, upload{data: u.data[:1<<20]}, 0, 512<<10, "sha256")

	// A chunk is in flight (its body half sent) when the process dies.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPatch, loc, pr)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", strconv.Itoa(1<<20))
	req.Header.Set("Upload-Checksum", checksum("sha256", u.data[1<<20:2<<20]))
	req.ContentLength = 1 << 20
	inflight := make(chan error, 1)
	go func() {
		resp, err := cl.c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		inflight <- err
	}()
	if _, err := pw.Write(u.data[1<<20 : 1<<20+300_000]); err != nil {
		t.Fatalf("writing half a chunk: %v", err)
	}
	p.kill(t)
	pw.CloseWithError(io.ErrUnexpectedEOF)
	<-inflight

	p2 := startIngest(t, nil, "--store", store)
	cl2 := p2.client(nil)
	cl2.t = t
	loc2 := cl2.url + u.id
	off := offsetOf(t, cl2.head(loc2))
	if off != 1<<20 {
		t.Fatalf("offset after SIGKILL = %d, want %d (checked chunks only)", off, 1<<20)
	}
	resp := cl2.sendChunks(loc2, u, off, 512<<10, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s\n%s", got, u.digest, p2.logs())
	}
	if n := scrape(t, cl2.c, p2.base, "courier_ingest_digest_fallback_total"); n != 0 {
		t.Fatalf("digest fallbacks = %v, want 0", n)
	}
	cl2.dir = dir
	got := cl2.storedBytes(u.id)
	if string(got) != string(u.data) {
		t.Fatal("stored bytes differ from the upload")
	}
}

func TestBinaryUsage(t *testing.T) {
	bin := ingestBinary(t)
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--store", "ftp://x"},
		{"--client-ca", "ca.pem"},
		{"--tls-cert", "a.pem"},
		{"extra"},
		{"--tokens", "/nonexistent/tokens"},
		{"--store", "s3://?region=x"},
		{"--max-header-bytes", "10"},
		{"--max-body-pause", "0s"},
		{"--max-conns", "-1"},
		{"--max-chunk-size", "1000", "--held-memory", "10", "--held-disk", "10"},
	} {
		cmd := exec.Command(bin, append(args, "--listen", "127.0.0.1:0")...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit status 2\n%s", args, err, out)
		}
		if len(out) == 0 {
			t.Errorf("%v: no message", args)
		}
	}
}

func TestBinaryStopsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := startIngest(t, nil, "--store", "file://"+t.TempDir())
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("courier-ingest still running 60s after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0\n%s", code, p.logs())
	}
}

func TestBinaryUnreachableBucketIsRuntimeFailure(t *testing.T) {
	bin := ingestBinary(t)
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--store", "s3://nobucket?endpoint=http://127.0.0.1:1&region=us-east-1")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "AWS_EC2_METADATA_DISABLED=true", "AWS_MAX_ATTEMPTS=1")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("%v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "nobucket") {
		t.Fatalf("message does not name the bucket:\n%s", out)
	}
}

// --metrics-listen moves /metrics off the upload port; /readyz answers on both.
func TestBinaryMetricsListen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := startIngest(t, nil, "--store", "file://"+t.TempDir(), "--metrics-listen", "127.0.0.1:0")
	p.mu.Lock()
	mbase := p.metricsBase
	p.mu.Unlock()
	if mbase == "" {
		t.Fatalf("no \"metrics listening\" line:\n%s", p.logs())
	}
	c := &http.Client{Timeout: 20 * time.Second}
	for _, probe := range []struct {
		url  string
		want int
	}{
		{p.base + "/metrics", http.StatusNotFound},
		{mbase + "/metrics", http.StatusOK},
		{p.base + "/readyz", http.StatusOK},
		{mbase + "/readyz", http.StatusOK},
	} {
		resp, err := c.Get(probe.url)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // so the connection stays open for the count below
		resp.Body.Close()
		if resp.StatusCode != probe.want {
			t.Errorf("GET %s: %d, want %d", probe.url, resp.StatusCode, probe.want)
		}
	}
	if n := scrape(t, c, mbase, "courier_ingest_connections_open"); n < 1 {
		t.Errorf("courier_ingest_connections_open = %v, want >= 1 (this client's upload-port connection)", n)
	}
}
