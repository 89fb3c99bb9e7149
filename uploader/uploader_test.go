package uploader

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecourier/courier/ingest"
	"github.com/edgecourier/courier/spool"
)

func TestMain(m *testing.M) {
	if os.Getenv(serverEnv) != "" {
		os.Exit(serveForBenchmark())
	}
	// tusd's handler delays cancelling a request's context after the request ended
	// (graceful completion); those goroutines are the server's and end on their own.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/tus/tusd/v2/pkg/handler.newDelayedContext.func1"))
}

const testChunk = 256 << 10

// env is one real server (tusd + courier-ingest's checks) behind a fault injector on
// loopback, and one real spool.
type env struct {
	t      *testing.T
	srv    *tusServer
	faults *faults
	http   *httptest.Server
	client *http.Client
	spool  *spool.Spool
	conns  atomic.Int64 // connections the server accepted
}

func newEnv(t *testing.T, mods ...func(*ingest.Options)) *env {
	t.Helper()
	e := &env{t: t, srv: newTusServer(t, mods...)}
	e.faults = newFaults(e.srv.handler)
	e.http = httptest.NewUnstartedServer(e.faults)
	e.http.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			e.conns.Add(1)
		}
	}
	e.http.Start()
	e.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	sp, err := spool.Open(context.Background(), spool.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	e.spool = sp
	t.Cleanup(func() {
		e.client.CloseIdleConnections()
		e.http.Close()
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

func (e *env) options() Options {
	return Options{
		Endpoint:            e.http.URL + "/files/",
		ChunkSize:           testChunk,
		Concurrency:         2,
		RequireVerification: true,
		Retry:               Retry{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, MaxAttempts: 10},
		AgentID:             "clinic-test",
		Client:              e.client,
		RequestTimeout:      30 * time.Second,
		Logger:              testLogger(),
	}
}

// testLogger is silent unless UPLOADER_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("UPLOADER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (e *env) uploader(opts Options) *Uploader {
	e.t.Helper()
	u, err := New(e.spool, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// run starts u.Run until the test ends (or stop is called) and checks it returns nil.
func (e *env) run(u *Uploader) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				buf := make([]byte, 1<<20)
				e.t.Fatalf("Run did not return after cancellation:\n%s", buf[:runtime.Stack(buf, true)])
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func payload(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7})
	r.Read(b)
	return b
}

func (e *env) add(data []byte, filename string) *spool.Item {
	e.t.Helper()
	it, err := e.spool.Receive(context.Background(), spool.Intake{
		Source: "lab-inbox", SourceKind: "folder", SourceRef: filename, Filename: filename,
	}, bytes.NewReader(data))
	if err != nil {
		e.t.Fatal(err)
	}
	return it
}

// wait polls the spool until item id reaches one of states.
func (e *env) wait(id string, states ...spool.State) *spool.Item {
	e.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		it, err := e.spool.Get(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, s := range states {
			if it.State == s {
				return it
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("item %s: state %s (attempts %d, last error %q), want %v", id, it.State, it.Attempts, it.LastError, states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// poll waits until cond holds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkStored asserts the server holds exactly data for the verified item.
func (e *env) checkStored(it *spool.Item, data []byte) {
	e.t.Helper()
	if it.State != spool.StateVerified {
		e.t.Fatalf("item %s: state %s, want verified (last error %q)", it.ID, it.State, it.LastError)
	}
	if !strings.HasPrefix(it.Location, e.http.URL+"/files/") {
		e.t.Errorf("item %s: location %q is not an upload URL of %s", it.ID, it.Location, e.http.URL)
	}
	got, err := e.srv.object(it.ID)
	if err != nil {
		e.t.Fatalf("item %s: object at the server: %v", it.ID, err)
	}
	if !bytes.Equal(got, data) {
		e.t.Fatalf("item %s: server holds %d bytes that differ from the %d source bytes", it.ID, len(got), len(data))
	}
}

func metaValue(meta, key string) (string, bool) {
	for kv := range strings.SplitSeq(meta, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), " ")
		if k == key {
			b, _ := base64.StdEncoding.DecodeString(v)
			return string(b), true
		}
	}
	return "", false
}

func TestUploadSizes(t *testing.T) {
	e := newEnv(t)
	sizes := []int{0, 1, testChunk - 1, testChunk, testChunk + 1, 20 << 20}
	var mu sync.Mutex
	done := map[string]bool{}
	opts := e.options()
	opts.Progress = func(p Progress) {
		if p.Done {
			mu.Lock()
			done[p.ItemID] = true
			mu.Unlock()
		}
	}
	u := e.uploader(opts)
	var items []*spool.Item
	var total int64
	for i, n := range sizes {
		items = append(items, e.add(payload(n, uint64(i)), fmt.Sprintf("patient-%d.pdf", i)))
		total += int64(n)
	}
	e.run(u)
	for i, it := range items {
		got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
		e.checkStored(got, payload(sizes[i], uint64(i)))
		if got.Attempts != 0 {
			t.Errorf("size %d: %d counted attempts, want 0", sizes[i], got.Attempts)
		}
	}
	sent, requests, metas := e.faults.get()
	if sent != total {
		t.Errorf("client sent %d body bytes for %d bytes of files: nothing should be sent twice", sent, total)
	}
	if requests[http.MethodOptions] != 1 {
		t.Errorf("%d OPTIONS requests, want discovery once", requests[http.MethodOptions])
	}
	ids := map[string]bool{}
	for _, m := range metas {
		id, _ := metaValue(m, "courier-id")
		ids[id] = true
		if _, ok := metaValue(m, "filename"); ok {
			t.Errorf("metadata %q carries a filename although SendFilenames is off", m)
		}
		for _, k := range []string{"sha256", "agent", "source", "filetype"} {
			if v, ok := metaValue(m, k); !ok || v == "" {
				t.Errorf("metadata %q lacks %s", m, k)
			}
		}
	}
	for i, it := range items {
		if !ids[it.ID] {
			t.Errorf("no POST carried courier-id %s", it.ID)
		}
		mu.Lock()
		if !done[it.ID] {
			t.Errorf("size %d: no final progress report", sizes[i])
		}
		mu.Unlock()
	}
	if l := u.Link(); l.State != LinkOK {
		t.Errorf("link %+v, want ok", l)
	}
}

func TestSendFilenames(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts.SendFilenames = true
	it := e.add(payload(1000, 1), "scan.pdf")
	e.run(e.uploader(opts))
	e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), payload(1000, 1))
	_, _, metas := e.faults.get()
	if name, _ := metaValue(metas[0], "filename"); name != "scan.pdf" {
		t.Errorf("filename metadata %q, want scan.pdf", name)
	}
}

func TestCorruptChunkIsResent(t *testing.T) {
	e := newEnv(t)
	data := payload(2<<20, 2)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.corrupt = 1 })
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if got.Attempts != 1 {
		t.Errorf("%d counted attempts, want 1 (one 460)", got.Attempts)
	}
	if sent, _, _ := e.faults.get(); sent > int64(len(data))+testChunk {
		t.Errorf("sent %d bytes for %d: more than one chunk again", sent, len(data))
	}
}

func TestWholeFileMismatchUploadsAgain(t *testing.T) {
	e := newEnv(t)
	data := payload(3*testChunk+7, 16)
	it := e.add(data, "a")
	// A broken middlebox spoils a chunk and forges a matching chunk checksum: only
	// the server's whole-file SHA-256 can notice.
	e.faults.set(func(f *faults) { f.forge = 1 })
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if got.Attempts != 1 {
		t.Errorf("%d counted attempts, want 1", got.Attempts)
	}
	if _, requests, _ := e.faults.get(); requests[http.MethodPost] != 2 {
		t.Errorf("%d POSTs, want 2: after a whole-file mismatch the file is uploaded again from scratch", requests[http.MethodPost])
	}
}

func TestSHA1WhenServerLacksSHA256(t *testing.T) {
	e := newEnv(t)
	data := payload(2*testChunk+3, 17)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.algos = "sha1,md5"; f.corrupt = 1 })
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if got.Attempts != 1 {
		t.Errorf("%d counted attempts, want 1: the server's sha1 check must catch the flipped byte", got.Attempts)
	}
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	if e.faults.algoUsed["sha1"] == 0 || e.faults.algoUsed["sha256"] != 0 {
		t.Errorf("Upload-Checksum algorithms used: %v, want sha1 only", e.faults.algoUsed)
	}
}

func TestManyItemsConcurrently(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts.Concurrency = 4
	var items []*spool.Item
	for i := range 24 {
		items = append(items, e.add(payload(i*40<<10, uint64(100+i)), fmt.Sprint(i)))
	}
	e.run(e.uploader(opts))
	for i, it := range items {
		e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), payload(i*40<<10, uint64(100+i)))
	}
	if _, requests, _ := e.faults.get(); requests[http.MethodPost] != len(items) {
		t.Errorf("%d POSTs for %d items", requests[http.MethodPost], len(items))
	}
}

func TestServerErrorsAreCounted(t *testing.T) {
	e := newEnv(t)
	data := payload(1<<20+5, 3)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.fail = 3 })
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if got.Attempts != 3 {
		t.Errorf("%d counted attempts, want 3 (three 500s)", got.Attempts)
	}
}

func TestMaxAttemptsQuarantine(t *testing.T) {
	e := newEnv(t)
	it := e.add(payload(3*testChunk, 4), "a")
	e.faults.set(func(f *faults) { f.fail = 1000 })
	opts := e.options()
	opts.Retry.MaxAttempts = 3
	e.run(e.uploader(opts))
	got := e.wait(it.ID, spool.StateQuarantined, spool.StateVerified)
	if got.State != spool.StateQuarantined || !strings.Contains(got.Reason, "500") {
		t.Errorf("state %s reason %q, want quarantined after 500s", got.State, got.Reason)
	}
	if got.Attempts != 2 {
		t.Errorf("%d counted attempts recorded before quarantine, want 2 (the third quarantines)", got.Attempts)
	}
}

func TestDroppedConnectionResumes(t *testing.T) {
	e := newEnv(t)
	data := payload(3<<20, 5)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.drop = 2 })
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if got.Attempts != 0 {
		t.Errorf("%d counted attempts, want 0: a dropped connection is not the file's fault", got.Attempts)
	}
	sent, requests, _ := e.faults.get()
	if sent > int64(len(data))+testChunk {
		t.Errorf("sent %d bytes for %d after two interruptions: more than a chunk again", sent, len(data))
	}
	if requests[http.MethodHead] < 2 {
		t.Errorf("%d HEAD requests, want one after each interruption", requests[http.MethodHead])
	}
}

func TestLostAnswersResumeByHead(t *testing.T) {
	e := newEnv(t)
	data := payload(2*testChunk, 18)
	it := e.add(data, "a")
	// The server stores both chunks (and verifies the file) but neither answer
	// arrives: HEAD tells the true offset, then the digest.
	e.faults.set(func(f *faults) { f.lose = 2 })
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	sent, requests, _ := e.faults.get()
	if sent != int64(len(data)) || got.Attempts != 0 {
		t.Errorf("sent %d bytes for %d, %d counted attempts: want nothing resent, nothing counted", sent, len(data), got.Attempts)
	}
	if requests[http.MethodPatch] != 2 || requests[http.MethodHead] != 2 {
		t.Errorf("requests %v, want 2 PATCH and 2 HEAD", requests)
	}
}

func TestUnauthorizedPausesLink(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("clinic-test s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *ingest.Options) { o.Tokens = tokens })
	data := payload(100<<10, 6)
	it := e.add(data, "a")
	var token atomic.Value
	token.Store("wrong")
	opts := e.options()
	opts.Token = func() string { return token.Load().(string) }
	u := e.uploader(opts)
	e.run(u)
	poll(t, "a paused link", func() bool { return u.Link().State == LinkPaused })
	got := e.wait(it.ID, spool.StateWaiting)
	if got.Attempts != 0 {
		t.Errorf("%d counted attempts, want 0: 401 is the link's problem", got.Attempts)
	}
	if l := u.Link(); !strings.Contains(l.LastError, "401") || l.Since.IsZero() {
		t.Errorf("link %+v: want the 401 as the reason", l)
	}
	// The token is fixed: uploads resume by themselves.
	token.Store("s3cret")
	got = e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if got.Attempts != 0 {
		t.Errorf("%d counted attempts after the pause, want 0", got.Attempts)
	}
	poll(t, "the link ok again", func() bool { return u.Link().State == LinkOK })
}

func TestTooLargeQuarantines(t *testing.T) {
	e := newEnv(t, func(o *ingest.Options) { o.MaxSize = testChunk })
	small := e.add(payload(testChunk, 7), "small")
	big := e.add(payload(testChunk+1, 7), "big")
	e.run(e.uploader(e.options()))
	got := e.wait(big.ID, spool.StateQuarantined, spool.StateVerified)
	if got.State != spool.StateQuarantined || !strings.Contains(got.Reason, "413") {
		t.Errorf("state %s reason %q, want quarantined with 413", got.State, got.Reason)
	}
	e.checkStored(e.wait(small.ID, spool.StateVerified, spool.StateQuarantined), payload(testChunk, 7))
}

func TestForgottenUploadIsCreatedAgain(t *testing.T) {
	e := newEnv(t)
	data := payload(5*testChunk, 8)
	it := e.add(data, "a")
	// The first attempt stores the upload URL and sends a chunk, then fails; the
	// resume's HEAD finds nothing.
	e.faults.set(func(f *faults) { f.fail = 1; f.notFound = 1 })
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	_, requests, metas := e.faults.get()
	if requests[http.MethodPost] != 2 {
		t.Errorf("%d POSTs, want 2 (create, then create again after 404)", requests[http.MethodPost])
	}
	for _, m := range metas {
		if id, _ := metaValue(m, "courier-id"); id != it.ID {
			t.Errorf("POST with courier-id %q, want %s", id, it.ID)
		}
	}
}

func TestCancelReleasesAndResumes(t *testing.T) {
	e := newEnv(t)
	data := payload(4<<20, 9)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.stall = 1 }) // the first PATCH hangs
	stop := e.run(e.uploader(e.options()))
	select {
	case <-e.faults.stalledCh:
	case <-time.After(60 * time.Second):
		t.Fatal("no PATCH arrived")
	}
	stop() // must return promptly although a request is in flight
	mid, err := e.spool.Get(context.Background(), it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mid.UploadURL == "" {
		t.Fatal("upload URL not stored before the first PATCH")
	}
	if mid.State == spool.StateVerified || mid.Attempts != 0 {
		t.Fatalf("after cancellation: state %s attempts %d", mid.State, mid.Attempts)
	}
	// A new uploader (a restart) leases the released item at once and resumes.
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	if sent, _, _ := e.faults.get(); sent > int64(len(data))+testChunk {
		t.Errorf("sent %d bytes for %d: more than one chunk again", sent, len(data))
	}
}

func TestServerWithoutChecksumWaits(t *testing.T) {
	e := newEnv(t)
	it := e.add(payload(1000, 10), "a")
	e.faults.set(func(f *faults) { f.noCheck = true })
	u := e.uploader(e.options())
	e.run(u)
	got := e.wait(it.ID, spool.StateWaiting)
	if !strings.Contains(got.LastError, "does not support the checksum extension") || got.Attempts != 0 {
		t.Errorf("last error %q attempts %d: want the missing checksum extension, not counted", got.LastError, got.Attempts)
	}
	if _, requests, _ := e.faults.get(); requests[http.MethodPost] != 0 {
		t.Errorf("%d POSTs to a server that cannot verify", requests[http.MethodPost])
	}
	poll(t, "a paused link", func() bool { return u.Link().State == LinkPaused })
}

func TestChangedContentQuarantines(t *testing.T) {
	for _, size := range []int{1000, 3 * testChunk} { // in the POST, and by PATCH
		t.Run(fmt.Sprint(size), func(t *testing.T) { testChangedContent(t, size) })
	}
}

func testChangedContent(t *testing.T, size int) {
	e := newEnv(t)
	data := payload(size, 11)
	it := e.add(data, "a")
	// The spooled bytes change under us (disk fault): every chunk checks out, the
	// whole file never does.
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 1
	if err := os.WriteFile(e.spool.ContentPath(it.ID), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateQuarantined, spool.StateVerified)
	if got.State != spool.StateQuarantined || !strings.Contains(got.Reason, "changed after intake") {
		t.Fatalf("state %s reason %q, want quarantined: content changed after intake", got.State, got.Reason)
	}
	if got.Attempts != 0 {
		t.Errorf("%d counted attempts: the first whole-file mismatch should quarantine", got.Attempts)
	}
	if _, err := e.srv.object(it.ID); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server still holds the bad object: %v", err)
	}
}

func TestLinkDownIsNotCounted(t *testing.T) {
	e := newEnv(t)
	data := payload(testChunk+10, 12)
	it := e.add(data, "a")
	e.faults.set(func(f *faults) { f.down = true })
	u := e.uploader(e.options())
	e.run(u)
	poll(t, "an offline link", func() bool { return u.Link().State == LinkOffline })
	got := e.wait(it.ID, spool.StateWaiting)
	if got.Attempts != 0 {
		t.Errorf("%d counted attempts while the link is down, want 0", got.Attempts)
	}
	// Many retries later the item is still only waiting, never quarantined.
	poll(t, "several retries", func() bool {
		_, requests, _ := e.faults.get()
		return requests[http.MethodOptions] >= 12 // > MaxAttempts
	})
	if got := e.wait(it.ID, spool.StateWaiting, spool.StateUploading); got.Attempts != 0 {
		t.Errorf("%d counted attempts after many link failures, want 0", got.Attempts)
	}
	e.faults.set(func(f *faults) { f.down = false })
	e.checkStored(e.wait(it.ID, spool.StateVerified, spool.StateQuarantined), data)
	poll(t, "the link ok again", func() bool { return u.Link().State == LinkOK })
}

func TestOnlyCourierSha256Verifies(t *testing.T) {
	e := newEnv(t)
	it := e.add(payload(2*testChunk, 13), "a")
	e.faults.set(func(f *faults) { f.noDigest = true })
	opts := e.options()
	opts.Retry.MaxAttempts = 2
	e.run(e.uploader(opts))
	got := e.wait(it.ID, spool.StateQuarantined, spool.StateVerified)
	if got.State != spool.StateQuarantined || !strings.Contains(got.Reason, "Courier-Sha256") {
		t.Errorf("state %s reason %q: a complete upload without Courier-Sha256 must never verify", got.State, got.Reason)
	}
}

func TestUnverifiedWithoutRequireWaits(t *testing.T) {
	e := newEnv(t)
	it := e.add(payload(2*testChunk, 14), "a")
	e.faults.set(func(f *faults) { f.noDigest = true; f.noCheck = true })
	opts := e.options()
	opts.RequireVerification = false
	opts.Retry.MaxAttempts = 2
	e.run(e.uploader(opts))
	poll(t, "several attempts", func() bool {
		_, requests, _ := e.faults.get()
		return requests[http.MethodHead] >= 4
	})
	got := e.wait(it.ID, spool.StateWaiting, spool.StateUploading)
	if got.Attempts != 0 || got.State == spool.StateVerified {
		t.Errorf("state %s attempts %d: want waiting, uncounted", got.State, got.Attempts)
	}
	if _, err := e.srv.object(it.ID); err != nil {
		t.Errorf("the bytes should be at the server even so: %v", err)
	}
}

func TestBandwidthLimitAndLeaseRenewal(t *testing.T) {
	e := newEnv(t)
	data := payload(3<<20, 15)
	it := e.add(data, "a")
	opts := e.options()
	opts.BandwidthLimit = 3 << 19 // 3 MiB at 1.5 MiB/s: about 2 s
	opts.LeaseTTL = time.Second
	start := time.Now()
	e.run(e.uploader(opts))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
	// A lower bound only: a slow machine makes it slower, never faster.
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Errorf("3 MiB at 1.5 MiB/s took %s", el)
	}
	// The lease (1 s) was renewed throughout: the second worker never took the item over.
	if got.Tries != 1 {
		t.Errorf("item leased %d times, want 1", got.Tries)
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{{}, {Endpoint: "ftp://x/"}, {Endpoint: "http://x/", ChunkSize: -1}} {
		if _, err := New((*spool.Spool)(nil), o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// upload.endpoint changed to a new server: an upload URL stored from the old one
// is not resumed there (it may be gone for good); the item is created at the new one.
func TestEndpointChangeCreatesAtNewServer(t *testing.T) {
	e := newEnv(t)
	data := payload(3*testChunk, 9)
	it := e.add(data, "a")
	ctx := context.Background()
	l, err := e.spool.Lease(ctx, "old-agent", time.Minute)
	if err != nil || l.ID != it.ID {
		t.Fatalf("lease: %v", err)
	}
	if err := e.spool.SetUploadURL(ctx, it.ID, "old-agent", "http://127.0.0.1:1/files/"+it.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.spool.Release(ctx, it.ID, "old-agent"); err != nil {
		t.Fatal(err)
	}
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateVerified, spool.StateQuarantined)
	e.checkStored(got, data)
}

// The server already holds this file id with another length (a spool restored from
// a backup, a clash): waiting cannot fix that, so the file is quarantined.
func TestCourierIDClashQuarantines(t *testing.T) {
	e := newEnv(t)
	data := payload(2*testChunk, 10)
	it := e.add(data, "a")
	req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/files/", nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "7")
	req.Header.Set("Upload-Metadata", "courier-id "+base64.StdEncoding.EncodeToString([]byte(it.ID)))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("seeding the clash: %d", resp.StatusCode)
	}
	e.run(e.uploader(e.options()))
	got := e.wait(it.ID, spool.StateQuarantined, spool.StateVerified)
	if got.State != spool.StateQuarantined || !strings.Contains(got.Reason, "ERR_COURIER_ID_EXISTS") {
		t.Fatalf("state %s reason %q, want quarantined naming the clash", got.State, got.Reason)
	}
}
