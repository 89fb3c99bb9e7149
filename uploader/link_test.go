package uploader

import (
	"bytes"
	"context"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecourier/courier/spool"
)

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(substr string) int { return strings.Count(s.String(), substr) }

func captureLog() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})), buf
}

// elsewhere is another server on loopback: a host outside the endpoint. It counts
// what reached it.
type elsewhere struct {
	*httptest.Server
	requests atomic.Int64
	tokens   atomic.Int64
	bytes    atomic.Int64
}

func newElsewhere(t *testing.T) *elsewhere {
	el := &elsewhere{}
	el.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		el.requests.Add(1)
		if r.Header.Get("Authorization") != "" {
			el.tokens.Add(1)
		}
		n, _ := bytes.NewBuffer(nil).ReadFrom(r.Body)
		el.bytes.Add(n)
		w.Header().Set("Tus-Resumable", "1.0.0")
		w.Header().Set("Upload-Offset", "0")
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(el.Close)
	return el
}

// A server (or a proxy) that answers the POST with a Location on another host, or
// with a redirect, gets neither the token nor the bytes: the item waits with the reason.
func TestLocationOutsideEndpointNotFollowed(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(f *faults, other string)
	}{
		{"location", func(f *faults, other string) { f.locationTo = other + "/files/stolen" }},
		{"redirect", func(f *faults, other string) { f.redirectTo = other + "/files/" }},
		{"path", func(f *faults, other string) { f.locationTo = "/elsewhere/x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			other := newElsewhere(t)
			small := e.add(payload(3000, 31), "small")
			big := e.add(payload(3*testChunk, 32), "big")
			e.faults.set(func(f *faults) { tc.set(f, other.URL) })
			opts := e.options()
			opts.Token = func() string { return "s3cret-token" }
			u := e.uploader(opts)
			e.run(u)
			poll(t, "a paused link", func() bool { l := u.Link(); return l.State == LinkPaused && l.Cause == CauseConfig })
			for _, it := range []*spool.Item{small, big} {
				got := e.wait(it.ID, spool.StateWaiting)
				if got.Attempts != 0 || !strings.Contains(got.LastError, "outside the configured endpoint") {
					t.Errorf("item %s: attempts %d last error %q: want waiting, uncounted, naming the refused Location", it.ID, got.Attempts, got.LastError)
				}
			}
			// Probes keep trying the link, and still nothing goes elsewhere.
			poll(t, "more POSTs", func() bool { _, r, _ := e.faults.get(); return r[http.MethodPost] >= 4 })
			if n := other.requests.Load(); n != 0 {
				t.Fatalf("the other host got %d requests (%d with the token, %d body bytes)", n, other.tokens.Load(), other.bytes.Load())
			}
			e.faults.set(func(f *faults) { f.locationTo, f.redirectTo = "", "" })
			e.checkStored(e.wait(small.ID, spool.StateVerified, spool.StateQuarantined), payload(3000, 31))
			e.checkStored(e.wait(big.ID, spool.StateVerified, spool.StateQuarantined), payload(3*testChunk, 32))
		})
	}
}

func TestInsideEndpoint(t *testing.T) {
	u := &Uploader{}
	for _, ep := range []string{"https://ingest.example.org/files/", "https://ingest.example.org/files"} {
		u.endpoint, _ = url.Parse(ep)
		for raw, ok := range map[string]bool{
			"https://ingest.example.org/files/abc":           true,
			"https://INGEST.example.org:443/files/abc":       true,
			"http://ingest.example.org/files/abc":            false, // downgrade
			"https://ingest.example.org:8443/files/abc":      false,
			"https://evil.example.org/files/abc":             false,
			"https://ingest.example.org.evil.org/files/abc":  false,
			"https://ingest.example.org/other/abc":           false,
			"https://ingest.example.org/filesX/abc":          false,
			"https://ingest.example.org/files/":              false,
			"https://ingest.example.org/files/../admin":      false,
			"https://ingest.example.org/files/a%2F..%2Fb":    false,
			"https://user:pw@ingest.example.org/files/abc":   false,
			"https://ingest.example.org/files/abc?x=1#frag":  true,
			"https://ingest.example.org/files/./abc":         false,
			"https://ingest.example.org/files/sub/abc":       true,
			"https://ingest.example.org/files/abc/..":        false,
			"https://ingest.example.org/files/abc%2e%2e/def": true, // a literal name, no dot segment
		} {
			if err := u.inside(raw); (err == nil) != ok {
				t.Errorf("endpoint %s: inside(%s) = %v, want ok=%v", ep, raw, err, ok)
			}
		}
	}
}

// A credential in the endpoint URL is refused and never printed.
func TestEndpointCredentialsNeverPrinted(t *testing.T) {
	for _, ep := range []string{"https://clinic:pa55word@ingest.example.org/files/", "https://tok3n@ingest.example.org/files/"} {
		_, err := New((*spool.Spool)(nil), Options{Endpoint: ep})
		if err == nil {
			t.Fatalf("New accepted %s", ep)
		}
		_, err = New(&spool.Spool{}, Options{Endpoint: ep})
		if err == nil || strings.Contains(err.Error(), "pa55word") || strings.Contains(err.Error(), "tok3n") || strings.Contains(err.Error(), "clinic") {
			t.Errorf("New(%s): %v: want refused without the credential", ep, err)
		}
		if r := redact(ep); strings.Contains(r, "pa55word") || strings.Contains(r, "tok3n") || strings.Contains(r, "clinic") {
			t.Errorf("redact(%s) = %s", ep, r)
		}
	}
}

// OPTIONS answered with 500 is a link that is down (the server fails), not paused.
func TestOptions500IsDown(t *testing.T) {
	e := newEnv(t)
	data := payload(5000, 33)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.answer[http.MethodOptions] = http.StatusInternalServerError })
	u := e.uploader(e.options())
	e.run(u)
	poll(t, "a down link", func() bool { return u.Link().State == LinkDown })
	if l := u.Link(); l.Cause != CauseServer || !strings.Contains(l.Reason, "500") {
		t.Errorf("link %+v: want down for the server's 500", l)
	}
	if got := e.wait(it.ID, spool.StateWaiting, spool.StateReceived); got.Attempts != 0 {
		t.Errorf("%d counted attempts, want 0", got.Attempts)
	}
	e.faults.set(func(f *faults) { delete(f.answer, http.MethodOptions) })
	e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), data)
	poll(t, "the link up", func() bool { return u.Link().State == LinkUp })
}

// A certificate the agent does not trust is reported as what it is.
func TestTLSFailureIsNamed(t *testing.T) {
	e := newEnv(t)
	it := e.add(payload(5000, 34), "a")
	tlsSrv := httptest.NewUnstartedServer(e.faults)
	tlsSrv.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	opts := e.options()
	opts.Endpoint = tlsSrv.URL + "/files/"
	u := e.uploader(opts) // e.client has no CA for the test server's certificate
	e.run(u)
	poll(t, "a down link", func() bool { return u.Link().State == LinkDown })
	l := u.Link()
	if l.Cause != CauseTLS || !strings.HasPrefix(l.Reason, "tls: the server's certificate is not signed by a trusted CA (upload.tls.ca_file)") {
		t.Errorf("link %+v: want the untrusted certificate named", l)
	}
	if got := e.wait(it.ID, spool.StateWaiting, spool.StateReceived); got.Attempts != 0 {
		t.Errorf("%d counted attempts, want 0", got.Attempts)
	}
}

// An outage: one WARN when the link goes down, one INFO when it is back (not a
// line per item per retry), watchers see down then up, and nothing is counted.
func TestLinkDownLoggedOnceAndWatched(t *testing.T) {
	e := newEnv(t)
	var items []*spool.Item
	for i := range 3 {
		items = append(items, e.add(payload(testChunk+i, uint64(40+i)), fmt.Sprint(i)))
	}
	e.faults.set(func(f *faults) { f.down = true })
	opts := e.options()
	var log *syncBuffer
	opts.Logger, log = captureLog()
	u := e.uploader(opts)
	var mu sync.Mutex
	var seen []string
	stop := u.WatchLink(func(l LinkStatus) {
		mu.Lock()
		seen = append(seen, l.State)
		mu.Unlock()
	})
	defer stop()
	e.run(u)
	poll(t, "many probes", func() bool { _, r, _ := e.faults.get(); return r[http.MethodOptions] >= 15 })
	if l := u.Link(); l.State != LinkDown || l.Cause != CauseNetwork || l.NextProbe.IsZero() {
		t.Errorf("link %+v: want down for the network", l)
	}
	e.faults.set(func(f *faults) { f.down = false })
	for i, it := range items {
		got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
		e.checkStored(got, payload(testChunk+i, uint64(40+i)))
		if got.Attempts != 0 {
			t.Errorf("item %d: %d counted attempts", i, got.Attempts)
		}
	}
	if n := log.count("upload link down"); n != 1 {
		t.Errorf("%d 'link down' lines, want 1:\n%s", n, log)
	}
	if n := log.count("upload link up again"); n != 1 {
		t.Errorf("%d 'link up' lines, want 1:\n%s", n, log)
	}
	if n := log.count("level=INFO msg=\"try later\""); n != 0 {
		t.Errorf("%d per-item retry lines during the outage, want 0", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "down,up" {
		t.Errorf("watcher saw %v, want [down up]", seen)
	}
}

// A reverse proxy answering 502 for every file for a long time is the link's
// fault: the backlog is not quarantined.
func TestProxy5xxDoesNotQuarantineBacklog(t *testing.T) {
	e := newEnv(t)
	var items []*spool.Item
	for i := range 5 {
		items = append(items, e.add(payload(2000+i, uint64(50+i)), fmt.Sprint(i)))
	}
	e.faults.set(func(f *faults) { f.answer[http.MethodPost] = http.StatusBadGateway; f.answerBody = "bad gateway" })
	opts := e.options()
	opts.Retry.MaxAttempts = 3
	u := e.uploader(opts)
	e.run(u)
	// Far more 502s than the items could take if each counted.
	poll(t, "many 502s", func() bool { e.faults.mu.Lock(); defer e.faults.mu.Unlock(); return e.faults.answerCount >= 40 })
	if l := u.Link(); l.State != LinkDown || l.Cause != CauseServer {
		t.Errorf("link %+v: want down for the server", l)
	}
	for _, it := range items {
		got, err := e.spool.Get(context.Background(), it.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == spool.StateQuarantined || got.Attempts > 1 {
			t.Errorf("item %s: state %s attempts %d after a proxy's 502s", it.ID, got.State, got.Attempts)
		}
	}
	e.faults.set(func(f *faults) { delete(f.answer, http.MethodPost) })
	for i, it := range items {
		e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), payload(2000+i, uint64(50+i)))
	}
}

// A full store at the server is never the file's fault.
func TestStoreFullIsNotCounted(t *testing.T) {
	e := newEnv(t)
	it := e.add(payload(2000, 60), "a")
	e.faults.set(func(f *faults) {
		f.answer[http.MethodPost] = http.StatusServiceUnavailable
		f.answerBody = "ERR_STORE_FULL: no space left at the server"
	})
	opts := e.options()
	opts.Retry.MaxAttempts = 2
	u := e.uploader(opts)
	e.run(u)
	poll(t, "several 503s", func() bool { e.faults.mu.Lock(); defer e.faults.mu.Unlock(); return e.faults.answerCount >= 6 })
	got, err := e.spool.Get(context.Background(), it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State == spool.StateQuarantined || got.Attempts != 0 {
		t.Errorf("state %s attempts %d: a full server store must not count against the file", got.State, got.Attempts)
	}
	if l := u.Link(); l.State != LinkDown || l.Cause != CauseServer {
		t.Errorf("link %+v, want down for the server", l)
	}
	e.faults.set(func(f *faults) { delete(f.answer, http.MethodPost) })
	e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), payload(2000, 60))
}

// A link that drops every 700 KiB never carries a 4 MiB chunk: the chunk size
// comes down until chunks get through, and the file finishes.
func TestFlappingLinkFinishesLargeFile(t *testing.T) {
	e := newEnv(t)
	data := payload(6<<20, 61)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.dropEvery = 700 << 10 })
	opts := e.options()
	opts.ChunkSize = 4 << 20
	var minChunk atomic.Int64
	minChunk.Store(opts.ChunkSize)
	opts.Progress = func(p Progress) {
		if p.ChunkSize > 0 && p.ChunkSize < minChunk.Load() {
			minChunk.Store(p.ChunkSize)
		}
	}
	e.run(e.uploader(opts))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if got.Attempts != 0 {
		t.Errorf("%d counted attempts, want 0", got.Attempts)
	}
	e.faults.mu.Lock()
	drops := e.faults.drops
	e.faults.mu.Unlock()
	if drops < 3 || minChunk.Load() > 512<<10 {
		t.Errorf("%d drops, smallest chunk reported %d: want the chunk size brought down", drops, minChunk.Load())
	}
}

// walWaker gives the spool a change counter from its write-ahead log, which
// another process's commit changes, until the spool has WakeCounter of its own.
type walWaker struct {
	*spool.Spool
	calls atomic.Int64
}

func (w *walWaker) WakeCounter(context.Context) (int64, error) {
	w.calls.Add(1)
	fi, err := os.Stat(filepath.Join(w.Dir(), "spool.db-wal"))
	if err != nil {
		return 0, err
	}
	return fi.ModTime().UnixNano() ^ fi.Size(), nil
}

// With every backoff an hour long, a link that comes back and `courier spool
// retry` from another process still get files moving at once.
func TestWakeWithHourBackoff(t *testing.T) {
	e := newEnv(t)
	var store Store = e.spool
	ww := &walWaker{Spool: e.spool}
	if _, ok := store.(Waker); !ok {
		store = ww
	}
	opts := e.options()
	opts.Retry = Retry{Initial: time.Hour, Max: time.Hour, MaxAttempts: 10}
	u, err := New(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	down := e.add(payload(5000, 70), "down")
	e.faults.set(func(f *faults) { f.down = true })
	e.run(u)
	e.wait(down.ID, spool.StateWaiting)
	// The link comes back: the item is due at once, not in an hour.
	e.faults.set(func(f *faults) { f.down = false })
	e.checkStored(e.wait(down.ID, spool.StateVerified, spool.StateQuarantined), payload(5000, 70))

	// An item the server asks to come back in an hour, retried by a person from
	// another process (a shared spool, as the CLI opens it).
	e.faults.set(func(f *faults) { f.answer[http.MethodPost] = http.StatusTooManyRequests; f.retryAfter = "3600" })
	later := e.add(payload(5000, 71), "later")
	got := e.wait(later.ID, spool.StateWaiting)
	if !got.NextAttempt.After(time.Now().Add(30 * time.Minute)) {
		t.Fatalf("next attempt %s: want about an hour away", got.NextAttempt)
	}
	e.faults.set(func(f *faults) { delete(f.answer, http.MethodPost) })
	cli, err := spool.Open(context.Background(), spool.Options{Dir: e.spool.Dir(), Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := cli.Retry(context.Background(), later.ID); err != nil {
		t.Fatal(err)
	}
	e.checkStored(e.wait(later.ID, spool.StateVerified, spool.StateQuarantined), payload(5000, 71))
	if store == Store(ww) && ww.calls.Load() == 0 {
		t.Error("the change counter was never read")
	}
}

// Progress carries rate, time left and chunk size; Uploads lists uploads in flight;
// a long upload is logged now and then.
func TestProgressReported(t *testing.T) {
	e := newEnv(t)
	data := payload(3<<20, 80)
	it := e.add(data, "a")
	opts := e.options()
	opts.BandwidthLimit = 1 << 20 // about 3 s
	var log *syncBuffer
	opts.Logger, log = captureLog()
	var mu sync.Mutex
	var reports []Progress
	opts.Progress = func(p Progress) {
		mu.Lock()
		reports = append(reports, p)
		mu.Unlock()
	}
	u := e.uploader(opts)
	u.progressLog = 500 * time.Millisecond
	e.run(u)
	var inFlight []Progress
	poll(t, "the upload in flight", func() bool { inFlight = u.Uploads(); return len(inFlight) == 1 && inFlight[0].Sent > 0 })
	if p := inFlight[0]; p.ItemID != it.ID || p.Total != int64(len(data)) || p.ChunkSize != testChunk {
		t.Errorf("Uploads: %+v", p)
	}
	e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), data)
	mu.Lock()
	defer mu.Unlock()
	var rated, eta bool
	for _, p := range reports {
		rated = rated || p.Rate > 0
		eta = eta || p.Remaining > 0
	}
	if !rated || !eta || !reports[len(reports)-1].Done {
		t.Errorf("progress reports without rate (%v) or time left (%v), or not done last: %+v", rated, eta, reports[len(reports)-1])
	}
	if log.count("upload progress") == 0 {
		t.Errorf("no progress line in the log:\n%s", log)
	}
	if len(u.Uploads()) != 0 {
		t.Errorf("Uploads after the end: %+v", u.Uploads())
	}
}

// Small files travel in the POST (creation with upload) over a few reused
// connections, and are leased as soon as they are received.
func TestSmallFilesOneRequestReusedConnections(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts.Concurrency = 2
	opts.Workers = 8
	u := e.uploader(opts)
	e.run(u)
	var items []*spool.Item
	for i := range 60 {
		items = append(items, e.add(payload(4096, uint64(200+i)), fmt.Sprint(i)))
		u.Notify()
	}
	for i, it := range items {
		e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), payload(4096, uint64(200+i)))
	}
	_, requests, _ := e.faults.get()
	if requests[http.MethodPost] != len(items) || requests[http.MethodPatch] != 0 || requests[http.MethodHead] != 0 {
		t.Errorf("requests %v for %d small files: want one POST each, nothing else", requests, len(items))
	}
	if n := e.conns.Load(); n > 2*int64(opts.Workers) {
		t.Errorf("%d connections for %d files with %d workers: connections are not reused", n, len(items), opts.Workers)
	}
}
