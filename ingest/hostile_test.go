package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// logBuf collects a Server's JSON log lines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// records returns the log lines with msg=audit (and event, if given).
func (l *logBuf) records(event string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(l.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "audit" {
			continue
		}
		if event == "" || rec["event"] == event {
			out = append(out, rec)
		}
	}
	return out
}

// servedServer is a Server run by Serve (connection caps, TLS) on loopback.
type servedServer struct {
	*testServer
	addr        string // host:port of the upload listener
	metricsAddr string // host:port of the metrics listener, if any
}

// startServe runs Serve; withTLS (if set) returns the server's TLS config and
// a client for it.
func startServe(t *testing.T, opts Options, withTLS func(*Server) (*tls.Config, *http.Client), separateMetrics bool) *servedServer {
	t.Helper()
	if opts.Store == "" {
		opts.Store = "file://" + t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mln net.Listener
	if separateMetrics {
		if mln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ss := &servedServer{addr: ln.Addr().String()}
	if mln != nil {
		ss.metricsAddr = mln.Addr().String()
	}
	scheme, client := "http", &http.Client{Timeout: 60 * time.Second}
	var cfg *tls.Config
	if withTLS != nil {
		scheme = "https"
		cfg, client = withTLS(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, cfg, mln) }()
	ss.testServer = &testServer{t: t, srv: srv, url: scheme + "://" + ss.addr + "/files/", c: client}
	if strings.HasPrefix(opts.Store, "file://") {
		ss.dir = strings.TrimPrefix(opts.Store, "file://")
	}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(2 * ShutdownGrace):
			t.Errorf("Serve did not return")
		}
		srv.Close()
	})
	return ss
}

// dialFrom connects to addr from the loopback address local (127.0.0.x).
func dialFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	return d.Dial("tcp", addr)
}

// getHealthz sends one GET /healthz on c and reports whether it was answered.
func getHealthz(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: ingest\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitClosed reads c until the server closes it (true) or bound passes.
func waitClosed(c net.Conn, bound time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(bound))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func metricValue(t *testing.T, s *Server, name string, labels ...string) float64 {
	t.Helper()
	switch name {
	case "conn_open":
		return testutil.ToFloat64(s.metrics.connOpen)
	case "conn_limited":
		return testutil.ToFloat64(s.metrics.connLimited.WithLabelValues(labels...))
	case "held":
		return testutil.ToFloat64(s.metrics.heldBytes.WithLabelValues(labels...))
	case "held_refused":
		return testutil.ToFloat64(s.metrics.heldRefused)
	case "slow":
		return testutil.ToFloat64(s.metrics.slowBodies)
	case "store_full":
		return testutil.ToFloat64(s.metrics.storeFull)
	case "torn":
		return testutil.ToFloat64(s.metrics.tornDiscarded)
	case "write_once":
		return testutil.ToFloat64(s.metrics.writeOnce)
	}
	return counter(t, s, name)
}

// eventually polls cond for at most 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Idle connections from several addresses cannot lock out a real upload: each
// address gets MaxConnsPerAddr, the rest are closed, and the upload verifies.
func TestConnectionFloodFromSeveralAddresses(t *testing.T) {
	const addrs, perAddr, tries = 5, 20, 60
	ts := startServe(t, Options{Net: NetOptions{MaxConns: 150, MaxConnsPerAddr: perAddr, IdleTimeout: 5 * time.Minute}}, nil, false)
	var mu sync.Mutex
	var held []net.Conn
	served := map[string]int{}
	var wg sync.WaitGroup
	for a := 0; a < addrs; a++ {
		local := fmt.Sprintf("127.0.0.%d", a+2)
		for i := 0; i < tries; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialFrom(local, ts.addr)
				if err != nil {
					return
				}
				if getHealthz(c) {
					mu.Lock()
					served[local]++
					held = append(held, c) // stays open, idle
					mu.Unlock()
					return
				}
				c.Close()
			}()
		}
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for a := 0; a < addrs; a++ {
		local := fmt.Sprintf("127.0.0.%d", a+2)
		if served[local] != perAddr {
			t.Errorf("%s: %d connections served, want the cap of %d", local, served[local], perAddr)
		}
	}
	// The accept loop counts a refusal right after it closes the connection: the
	// client may see the close first.
	want := float64(addrs * (tries - perAddr))
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, ts.srv, "conn_limited", "per_address") < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := metricValue(t, ts.srv, "conn_limited", "per_address"); got != want {
		t.Errorf("connections refused per address = %v, want %v", got, want)
	}
	// A real upload from 127.0.0.1 goes through while the idle ones stay.
	u := newUpload(3<<20 + 5)
	resp := ts.sendChunks(ts.create(u), u, 0, 1<<20, "sha256")
	if resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("upload during the flood not verified")
	}
	if !bytes.Equal(ts.storedBytes(u.id), u.data) {
		t.Fatal("stored bytes differ")
	}
	if open := metricValue(t, ts.srv, "conn_open"); open < addrs*perAddr || open > 150 {
		t.Errorf("open connections = %v, want %d idle ones plus the upload's, at most 150", open, addrs*perAddr)
	}
}

// The total cap makes connections wait for a free slot; none is lost and
// never more than the cap are open.
func TestTotalConnectionCapWaits(t *testing.T) {
	srv, err := New(context.Background(), Options{Store: "file://" + t.TempDir(), Logger: testLogger(t),
		Net: NetOptions{MaxConns: 10, MaxConnsPerAddr: -1, IdleTimeout: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll := srv.LimitListener(ln)
	hs := srv.HTTPServer(srv.Handler())
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ll) }()
	defer func() {
		hs.Close()
		<-done
	}()
	const conns = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered, closed := 0, 0
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			ok := getHealthz(c)
			gone := ok && waitClosed(c, 20*time.Second) // the idle timeout frees the slot
			mu.Lock()
			if ok {
				answered++
			}
			if gone {
				closed++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if answered != conns || closed != conns {
		t.Fatalf("%d of %d connections answered, %d closed when idle; want all", answered, conns, closed)
	}
	_, peak := ll.(*limitListener).stats()
	if peak > 10 || peak < 2 {
		t.Fatalf("at most %d connections were open at once, want 2..10", peak)
	}
	if metricValue(t, srv, "conn_limited", "total") == 0 {
		t.Fatal("no accept waited for a slot")
	}
}

// An idle kept-alive connection, a client that never finishes its headers, and
// one whose headers are too large are all dealt with.
func TestIdleHeaderTimeoutsAndHeaderSize(t *testing.T) {
	ts := startServe(t, Options{Net: NetOptions{IdleTimeout: 200 * time.Millisecond, ReadHeaderTimeout: 200 * time.Millisecond}}, nil, false)

	idle, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if !getHealthz(idle) {
		t.Fatal("GET /healthz not answered")
	}
	if !waitClosed(idle, 20*time.Second) {
		t.Fatal("idle connection still open 20s after its last request (idle timeout 200ms)")
	}

	slow, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	if !waitClosed(slow, 20*time.Second) {
		t.Fatal("connection with unfinished headers still open 20s later (read-header timeout 200ms)")
	}

	req, _ := http.NewRequest(http.MethodHead, ts.url+"x", nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 80<<10))
	resp, err := ts.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("80 KiB of headers: status %d, want 431", resp.StatusCode)
	}
}

// rawPatch starts a PATCH on its own connection: headers and the first part of
// a body of length bytes. The caller sends the rest (or not) on the conn.
func rawPatch(t *testing.T, addr, path string, offset int64, length int, sum string, first []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	hdr := fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: ingest\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"+
		"Upload-Offset: %d\r\nContent-Length: %d\r\n", path, offset, length)
	if sum != "" {
		hdr += "Upload-Checksum: " + sum + "\r\n"
	}
	if _, err := io.WriteString(c, hdr+"\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	return c
}

// readAnswer reads the response on c (bounded).
func readAnswer(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer within 20s: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// A checksummed chunk that stalls or trickles is cut off, and what it held is
// given back.
func TestStalledAndTricklingChunksAreCutOff(t *testing.T) {
	ts := startServe(t, Options{ChunkMemory: 64 << 10, MaxChunkSize: 512 << 10,
		Net: NetOptions{MaxBodyPause: 300 * time.Millisecond, MinBodyRate: 64 << 10}}, nil, false)
	u := newUpload(400 << 10)
	loc := ts.create(u)
	path := "/files/" + u.id

	// Stalled: 10 KiB of 400 KiB, then nothing.
	c := rawPatch(t, ts.addr, path, 0, len(u.data), checksum("sha256", u.data), u.data[:10<<10])
	resp, body := readAnswer(t, c)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, "ERR_READ_TIMEOUT") {
		t.Fatalf("stalled chunk: %d %q, want 408 ERR_READ_TIMEOUT", resp.StatusCode, body)
	}

	// Trickling: a byte every 50 ms is far below 64 KiB/s.
	trickle := rawPatch(t, ts.addr, path, 0, len(u.data), checksum("sha256", u.data), u.data[:1])
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		for i := 1; i < 200; i++ {
			time.Sleep(50 * time.Millisecond)
			if _, err := trickle.Write(u.data[i : i+1]); err != nil {
				return
			}
		}
	}()
	resp, body = readAnswer(t, trickle)
	trickle.Close()
	<-trickled
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, "bytes/s") {
		t.Fatalf("trickling chunk: %d %q, want 408 naming the minimum rate", resp.StatusCode, body)
	}
	if n := metricValue(t, ts.srv, "slow"); n != 2 {
		t.Errorf("slow bodies = %v, want 2", n)
	}
	eventually(t, "held bytes given back", func() bool {
		return metricValue(t, ts.srv, "held", "memory") == 0 && metricValue(t, ts.srv, "held", "disk") == 0
	})
	if got := offsetOf(t, ts.head(loc)); got != 0 {
		t.Fatalf("offset after cut-off chunks = %d, want 0", got)
	}
	// A streamed body that stalls is cut off too; the bytes it delivered stay.
	c = rawPatch(t, ts.addr, path, 0, len(u.data), "", u.data[:100<<10])
	resp, _ = readAnswer(t, c)
	if resp.StatusCode < 400 {
		t.Fatalf("stalled streamed PATCH: %d, want an error", resp.StatusCode)
	}
	off := offsetOf(t, ts.head(loc))
	if off != 100<<10 {
		t.Fatalf("offset after the stalled streamed PATCH = %d, want %d", off, 100<<10)
	}
	resp = ts.sendChunks(loc, u, off, 64<<10, "sha256")
	if resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("upload not verified after the cut-off chunks")
	}
}

// Held chunks share a bound: a chunk that does not fit is refused with 503
// and Retry-After instead of pinning more memory or disk.
func TestHeldChunksAreBounded(t *testing.T) {
	ts := startServe(t, Options{ChunkMemory: 256 << 10, MaxChunkSize: 512 << 10, HeldMemory: 512 << 10, HeldDisk: 300 << 10,
		TempDir: t.TempDir(), Net: NetOptions{MaxBodyPause: time.Minute}}, nil, false)
	u := newUpload(512 << 10)
	loc := ts.create(u)
	path := "/files/" + u.id

	// Held: 256 KiB in memory and 256 KiB on disk reserved, 1 KiB sent.
	stalled := rawPatch(t, ts.addr, path, 0, len(u.data), checksum("sha256", u.data), u.data[:1<<10])
	eventually(t, "the stalled chunk's reservation", func() bool { return metricValue(t, ts.srv, "held", "disk") == 256<<10 })

	req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(u.data))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Upload-Checksum", checksum("sha256", u.data))
	resp, err := ts.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "ERR_SERVER_BUSY") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("chunk beyond the held-disk bound: %d %q Retry-After %q, want 503 ERR_SERVER_BUSY with Retry-After",
			resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if n := metricValue(t, ts.srv, "held_refused"); n != 1 {
		t.Errorf("held-chunk refusals = %v, want 1", n)
	}
	// A chunk that fits in memory alone still goes through meanwhile.
	if resp := ts.patch(loc, 0, u.data[:200<<10], checksum("sha256", u.data[:200<<10])); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("small chunk while the bound is reached: %d", resp.StatusCode)
	}
	stalled.Close()
	eventually(t, "held bytes given back", func() bool {
		return metricValue(t, ts.srv, "held", "memory") == 0 && metricValue(t, ts.srv, "held", "disk") == 0
	})
	resp = ts.sendChunks(loc, u, 200<<10, 312<<10, "sha256")
	if resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("not verified")
	}
	if n := counter(t, ts.srv, "fallback"); n != 0 {
		t.Errorf("digest fallbacks = %v, want 0", n)
	}
}

// With tokens on, an unknown upload is 404 for its would-be owner, and someone
// else's upload looks exactly like an unknown one.
func TestUnknownUploadIs404(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokFile, "clinic-1 one\nclinic-2 two\n")
	ts := startServer(t, Options{Tokens: tokFile})
	ts.tok = "one"
	u := newUpload(1000)
	loc := ts.create(newUploadFor(u, "clinic-1"))
	missing := ts.url + newUpload(1).id

	answer := func(tok, method, target string) string {
		var body io.Reader
		if method == http.MethodPatch {
			body = bytes.NewReader(u.data)
		}
		req, _ := http.NewRequest(method, target, body)
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Authorization", "Bearer "+tok)
		if method == http.MethodPatch {
			req.Header.Set("Content-Type", "application/offset+octet-stream")
			req.Header.Set("Upload-Offset", "0")
			req.Header.Set("Upload-Checksum", checksum("sha256", u.data))
		}
		resp, err := ts.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h := resp.Header.Clone()
		h.Del("Date")
		return fmt.Sprintf("%d %v %q", resp.StatusCode, h, b)
	}
	for _, m := range []string{http.MethodHead, http.MethodPatch, http.MethodDelete} {
		own := answer("one", m, missing)
		if !strings.HasPrefix(own, "404 ") {
			t.Errorf("%s of a missing upload by its owner: %s, want 404", m, own)
		}
		if m != http.MethodHead && !strings.Contains(own, "ERR_UPLOAD_NOT_FOUND") {
			t.Errorf("%s of a missing upload: %s, want a body saying ERR_UPLOAD_NOT_FOUND", m, own)
		}
		if others := answer("two", m, loc); others != own {
			t.Errorf("%s of someone else's upload:\n%s\nmissing upload:\n%s\nwant the same", m, others, own)
		}
	}
	if got := offsetOf(t, ts.head(loc)); got != 0 {
		t.Fatalf("offset of clinic-1's upload = %d after clinic-2's tries, want 0", got)
	}
}

func newUploadFor(u upload, agent string) upload {
	return upload{id: u.id, data: u.data, digest: u.digest, agent: agent}
}

// A verified object is write-once: its owner cannot DELETE it, and a new POST
// of its courier-id keeps returning it.
func TestVerifiedUploadIsWriteOnce(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokFile, "clinic-1 one\n")
	ts := startServer(t, Options{Tokens: tokFile})
	ts.tok = "one"
	u := newUploadFor(newUpload(50_000), "clinic-1")
	loc := ts.create(u)
	ts.sendChunks(loc, u, 0, 20_000, "sha256")

	del := func(target string) (int, string) {
		req, _ := http.NewRequest(http.MethodDelete, target, nil)
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Authorization", "Bearer one")
		resp, err := ts.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if st, body := del(loc); st != http.StatusForbidden || !strings.Contains(body, "ERR_WRITE_ONCE") {
		t.Fatalf("DELETE of a verified upload: %d %q, want 403 ERR_WRITE_ONCE", st, body)
	}
	if metricValue(t, ts.srv, "write_once") != 1 {
		t.Error("write-once refusal not counted")
	}
	// Other bytes of the same length under the same courier-id.
	other := newUploadFor(newUpload(50_001), "clinic-1")
	other.id, other.data = u.id, other.data[1:]
	resp := ts.post(other.metadata(), len(other.data), nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != loc || resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatalf("POST of the verified courier-id with other bytes: %d Location %q Courier-Sha256 %q, want 201 with the verified one",
			resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Courier-Sha256"))
	}
	if resp := ts.patch(loc, 0, other.data, checksum("sha256", other.data)); resp.StatusCode == http.StatusNoContent && offsetOf(t, resp) != int64(len(u.data)) {
		t.Fatalf("PATCH over a verified upload moved it to %d", offsetOf(t, resp))
	}
	if !bytes.Equal(ts.storedBytes(u.id), u.data) {
		t.Fatal("the verified object changed")
	}
	if ts.head(loc).Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("HEAD no longer reports the verified digest")
	}
	// Unfinished uploads can still be terminated by their owner.
	v := newUploadFor(newUpload(10_000), "clinic-1")
	vloc := ts.create(v)
	ts.sendChunks(vloc, upload{data: v.data[:5000]}, 0, 5000, "sha256")
	if st, body := del(vloc); st != http.StatusNoContent {
		t.Fatalf("DELETE of an unfinished upload: %d %q, want 204", st, body)
	}
	if st := ts.head(vloc).StatusCode; st != http.StatusNotFound {
		t.Fatalf("HEAD after termination: %d, want 404", st)
	}
}

// Every create, chunk, refusal, verification, termination and auth failure is
// one audit line; failed logins are rate-limited, but all are counted.
func TestAuditLines(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokFile, "clinic-1 one\n")
	var logs logBuf
	ts := startServer(t, Options{Tokens: tokFile, Logger: logs.logger()})
	ts.tok = "one"
	u := newUploadFor(newUpload(30_000), "clinic-1")
	meta := u.metadata("filename", "Jane-Doe-scan.pdf")
	resp := ts.post(meta, len(u.data), nil)
	loc := resp.Header.Get("Location")
	ts.sendChunks(loc, upload{data: u.data[:10_000]}, 0, 10_000, "sha256")
	bad := bytes.Clone(u.data[10_000:20_000])
	bad[0] ^= 1
	ts.patch(loc, 10_000, bad, checksum("sha256", u.data[10_000:20_000]))
	ts.sendChunks(loc, u, 10_000, 10_000, "sha256")
	v := newUploadFor(newUpload(100), "clinic-1")
	vloc := ts.create(v)
	req, _ := http.NewRequest(http.MethodDelete, vloc, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	ts.do(req)

	const probes = 60
	for i := 0; i < probes; i++ {
		ts.head(loc + "?x") // the right upload …
		req, _ := http.NewRequest(http.MethodHead, loc, nil)
		req.Header.Set("Authorization", "Bearer guess-"+strconv.Itoa(i)) // … with a wrong token
		ts.do(req)
	}
	for _, want := range []struct {
		event string
		keys  []string
	}{
		{"create", []string{"agent", "remote", "id", "size"}},
		{"chunk", []string{"agent", "remote", "id", "offset", "size"}},
		{"chunk_refused", []string{"agent", "remote", "id", "offset", "reason"}},
		{"verify", []string{"agent", "remote", "id", "size", "digest"}},
		{"terminate", []string{"agent", "remote", "id", "reason"}},
		{"auth_failure", []string{"remote", "reason"}},
	} {
		recs := logs.records(want.event)
		if len(recs) == 0 {
			t.Errorf("no audit line event=%s", want.event)
			continue
		}
		for _, k := range want.keys {
			if recs[0][k] == nil || recs[0][k] == "" {
				t.Errorf("audit event=%s lacks %s: %v", want.event, k, recs[0])
			}
		}
	}
	if got := logs.records("verify"); len(got) != 1 || got[0]["digest"] != u.digest || got[0]["agent"] != "clinic-1" {
		t.Errorf("verify lines %v, want one for clinic-1 with digest %s", got, u.digest)
	}
	if n := counter(t, ts.srv, "auth"); n != probes {
		t.Errorf("auth failures counted = %v, want %d", n, probes)
	}
	// At most 5 lines a second; the rest are reported as left out.
	eventually(t, "left-out lines reported", func() bool {
		total := len(logs.records("auth_failure"))
		for _, r := range logs.records("left_out") {
			total += int(r["count"].(float64))
		}
		return total == probes
	})
	if n := len(logs.records("auth_failure")); n >= probes {
		t.Errorf("%d auth-failure lines for %d probes: not rate-limited", n, probes)
	}
	if strings.Contains(logs.String(), "Jane-Doe") || strings.Contains(logs.String(), "guess-") {
		t.Error("a file name or a token reached the log")
	}
}

// MaxSize defaults to 16 GiB, is announced, and the 413 names it.
func TestDefaultMaxSize(t *testing.T) {
	ts := startServer(t, Options{})
	req, _ := http.NewRequest(http.MethodOptions, ts.url, nil)
	if got := ts.do(req).Header.Get("Tus-Max-Size"); got != strconv.Itoa(DefaultMaxSize) {
		t.Fatalf("Tus-Max-Size = %q, want %d", got, DefaultMaxSize)
	}
	req, _ = http.NewRequest(http.MethodPost, ts.url, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "9223372036854775807")
	req.Header.Set("Upload-Metadata", newUpload(1).metadata())
	resp, err := ts.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), strconv.Itoa(DefaultMaxSize)) {
		t.Fatalf("POST of 2^63-1 bytes: %d %q, want 413 naming %d", resp.StatusCode, body, DefaultMaxSize)
	}
}

// /metrics on its own listener, /readyz, and failed TLS handshakes counted as
// auth failures.
func TestMetricsListenerReadyzAndTLSFailures(t *testing.T) {
	p := newPKI(t)
	c1 := p.issue(t, "clinic-1", false)
	ts := startServe(t, Options{ClientCA: p.caPEM}, func(srv *Server) (*tls.Config, *http.Client) {
		cfg := &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
		srv.ConfigureTLS(cfg)
		return cfg, p.client(&c1)
	}, true)

	u := newUploadFor(newUpload(10_000), "clinic-1")
	resp := ts.post(u.metadata(), len(u.data), u.data, "Upload-Checksum", checksum("sha256", u.data))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatalf("upload over TLS: %d", resp.StatusCode)
	}
	if st := ts.head(strings.TrimSuffix(ts.url, "/files/") + "/metrics").StatusCode; st != http.StatusNotFound {
		t.Errorf("/metrics on the upload port: %d, want 404 with --metrics-listen", st)
	}
	// Handshakes that fail: a client that does not send a certificate the
	// server can verify and speaks plain HTTP, and one that does not trust the server.
	plain, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	waitClosed(plain, 20*time.Second)
	plain.Close()
	untrusting := &http.Client{Timeout: 20 * time.Second}
	if _, err := untrusting.Get("https://" + ts.addr + "/healthz"); err == nil {
		t.Fatal("a client without the CA connected")
	}
	mc := &http.Client{Timeout: 20 * time.Second}
	metricsURL := "http://" + ts.metricsAddr
	eventually(t, "two TLS handshake failures counted", func() bool {
		return scrape(t, mc, metricsURL, "courier_ingest_auth_failures_total") == 2
	})
	for _, path := range []string{"/readyz", "/healthz"} {
		resp, err := mc.Get(metricsURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d, want 200", path, resp.StatusCode)
		}
	}
	if scrape(t, mc, metricsURL, "courier_ingest_verified_total") != 1 {
		t.Error("metrics listener does not show the verified upload")
	}
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// mountTmpfs mounts a tmpfs of size bytes (root only) and unmounts it at the end.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := execCommand("mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(size), "tmpfs", dir)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("mount tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := execCommand("umount", dir); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the filesystem is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for i := 0; i < 1<<16; i++ {
		if _, err := f.Write(buf); err != nil {
			if isNoSpace(err) {
				return p
			}
			t.Fatal(err)
		}
	}
	t.Fatal("filesystem never filled")
	return ""
}

// A full store answers 503 ERR_STORE_FULL with Retry-After (the server's fault,
// not the file's), leaves no torn .info, repairs one left by older versions, and
// the upload completes once there is room.
func TestFullStore(t *testing.T) {
	dir := mountTmpfs(t, 1<<20)
	ts := startServer(t, Options{Store: "file://" + dir})
	filler := fill(t, dir)

	ready := func() int {
		resp, err := ts.c.Get(ts.http.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := ready(); st != http.StatusServiceUnavailable {
		t.Errorf("/readyz on a full store: %d, want 503", st)
	}
	u := newUpload(300 << 10)
	resp := ts.post(u.metadata(), len(u.data), nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("POST on a full store: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	for _, f := range []string{u.id, u.id + ".info"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind by the failed create (%v)", f, err)
		}
	}
	// What older versions left: an empty .info and object.
	for _, f := range []string{u.id, u.id + ".info"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if st := ts.head(ts.url + u.id).StatusCode; st != http.StatusNotFound {
		t.Errorf("HEAD of a torn upload: %d, want 404 (so the agent creates it again)", st)
	}
	os.Remove(filler)
	if st := ready(); st != http.StatusOK {
		t.Errorf("/readyz with room: %d, want 200", st)
	}
	loc := ts.create(u)
	if metricValue(t, ts.srv, "torn") != 1 {
		t.Error("torn upload not counted")
	}
	ts.sendChunks(loc, upload{data: u.data[:100<<10]}, 0, 100<<10, "sha256")

	// The disk fills in the middle of a chunk.
	filler = fill(t, dir)
	req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(u.data[100<<10:]))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", strconv.Itoa(100<<10))
	req.Header.Set("Upload-Checksum", checksum("sha256", u.data[100<<10:]))
	resp, err := ts.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "ERR_STORE_FULL") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("PATCH on a full store: %d %q, want 503 ERR_STORE_FULL with Retry-After", resp.StatusCode, body)
	}
	os.Remove(filler)
	off := offsetOf(t, ts.head(loc))
	resp = ts.sendChunks(loc, u, off, 100<<10, "sha256")
	if resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("upload not verified after the store had room again")
	}
	if !bytes.Equal(ts.storedBytes(u.id), u.data) {
		t.Fatal("stored bytes differ")
	}
	if n := metricValue(t, ts.srv, "store_full"); n < 2 {
		t.Errorf("store-full answers counted = %v, want >= 2", n)
	}
}

// A torn .info nobody POSTs again is expired like an abandoned upload.
func TestJanitorDiscardsTornUploads(t *testing.T) {
	ts := startServer(t, Options{ExpireAfter: time.Hour})
	u := newUpload(10)
	for _, f := range []string{u.id, u.id + ".info"} {
		if err := os.WriteFile(filepath.Join(ts.dir, f), nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := ts.srv.Expire(context.Background()); err != nil || n != 0 {
		t.Fatalf("Expire of a fresh torn upload = %d, %v; want 0", n, err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, f := range []string{u.id, u.id + ".info"} {
		if err := os.Chtimes(filepath.Join(ts.dir, f), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := ts.srv.Expire(context.Background()); err != nil || n != 1 {
		t.Fatalf("Expire of an old torn upload = %d, %v; want 1", n, err)
	}
	if entries, _ := os.ReadDir(ts.dir); len(entries) != 0 {
		t.Fatalf("%d files left after expiring the torn upload", len(entries))
	}
}
