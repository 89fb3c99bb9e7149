package agent

import (
	"bufio"
	"context"
	"crypto/rand"
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
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/ingest"
	"github.com/edgecourier/courier/internal/mosquittotest"
	"github.com/edgecourier/courier/internal/testutil"
	"github.com/edgecourier/courier/spool"
)

const wait = 60 * time.Second

// server is a real courier-ingest on loopback that counts the tus creations (POST).
type server struct {
	url   string
	posts atomic.Int64
}

func startIngest(t *testing.T) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := ingest.New(ctx, ingest.Options{Store: "file://" + t.TempDir(), BasePath: "/files/",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{}
	h := srv.Handler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			s.posts.Add(1)
		}
		h.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	t.Cleanup(func() {
		hs.Close()
		<-done
		srv.Close()
		cancel()
	})
	s.url = "http://" + ln.Addr().String() + "/files/"
	return s
}

// env is a config on disk with its folders.
type env struct {
	dir, inbox, events, endpoint string
	extra                        string // more YAML appended (sources, http)
	upload                       string // lines under upload:
	tail                         string // top-level YAML appended
}

func newEnv(t *testing.T, endpoint string) *env {
	dir := t.TempDir()
	e := &env{dir: dir, inbox: filepath.Join(dir, "inbox"), events: filepath.Join(dir, "events.jsonl"), endpoint: endpoint}
	if err := os.MkdirAll(e.inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) yaml() string {
	return fmt.Sprintf(`agent:
  id: test
  data_dir: %s
upload:
  endpoint: %s
  retry: {initial: 100ms, max: 1s}
%s
sources:
  - name: inbox
    kind: folder
    path: %s
    settle: 200ms
    rescan: 1s
%s
events:
  file: %s
log:
  level: debug
%s`, filepath.Join(e.dir, "spool"), e.endpoint, e.upload, e.inbox, e.extra, e.events, e.tail)
}

func (e *env) config(t *testing.T) *config.Config {
	t.Helper()
	p := filepath.Join(e.dir, "courier.yaml")
	if err := os.WriteFile(p, []byte(e.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, e.yaml())
	}
	return cfg
}

// run starts the agent; the returned func cancels it and returns Run's error.
func run(t *testing.T, cfg *config.Config, logs io.Writer) (*Agent, func() error) {
	t.Helper()
	lvl := new(slog.LevelVar)
	a, err := New(context.Background(), cfg, Options{LogLevel: lvl,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: lvl}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	var result error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(wait):
				t.Fatal("Run did not return within a minute of cancel")
			}
		}
		return result
	}
	t.Cleanup(func() {
		stop()
		if sb, ok := logs.(*testutil.SyncBuffer); ok && t.Failed() {
			t.Logf("agent log:\n%s", sb.String())
		}
	})
	return a, stop
}

// verifiedEvents reads the events file: the item ids of verified events.
func verifiedEvents(t *testing.T, path string) map[string]string {
	t.Helper()
	out := map[string]string{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev struct {
			Type string `json:"type"`
			Data struct {
				FileID string `json:"file_id"`
				Source struct {
					Name string `json:"name"`
				} `json:"source"`
			} `json:"data"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("events file: %v", err)
		}
		if ev.Type == spool.EventVerified {
			out[ev.Data.FileID] = ev.Data.Source.Name
		}
	}
	return out
}

func writeFile(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// noLeaks checks, after every other cleanup of t, that no goroutine started during
// the test is left.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	// tusd (the ingest side) ends a request's context a moment after the request.
	t.Cleanup(func() {
		goleak.VerifyNone(t, opt, goleak.IgnoreTopFunction("github.com/tus/tusd/v2/pkg/handler.newDelayedContext.func1"))
	})
}

func TestRunDeliversAndStopsWithoutLeaks(t *testing.T) {
	noLeaks(t)
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	var logs testutil.SyncBuffer
	_, stop := run(t, e.config(t), &logs)
	writeFile(t, filepath.Join(e.inbox, "a.bin"), 1000)
	testutil.WaitFor(t, 10*time.Second, "the file's verified event", func() bool { return len(verifiedEvents(t, e.events)) == 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

func TestRunReturnsAfterEverythingStoppedWhenMQTTCannotStart(t *testing.T) {
	noLeaks(t)
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	cfg := e.config(t)
	cfg.MQTT.Broker = "tcp://" + testutil.FreePort(t)
	on := false
	cfg.Events.MQTT = &on
	a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// A connection that was started already refuses a second Start: the way Run's
	// start of MQTT fails.
	if err := a.mq.c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	err = a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "mqtt") {
		t.Fatalf("Run = %v, want the mqtt start error", err)
	}
	// goleak (deferred) checks that no source, uploader or publisher outlived Run.
}

func TestReloadDuringLargeUploadResumesIt(t *testing.T) {
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	// Slow enough that both reloads land while the file is on its way.
	e.upload = "  chunk_size: 1MiB\n  bandwidth_limit: 1MiB\n  concurrency: 1"
	var logs testutil.SyncBuffer
	a, stop := run(t, e.config(t), &logs)
	writeFile(t, filepath.Join(e.inbox, "big.bin"), 6<<20)
	testutil.WaitFor(t, wait, "the upload to start", func() bool { return strings.Contains(logs.String(), "set upload url") || srv.posts.Load() == 1 })

	// 1: a new folder; the uploader is not touched.
	second := filepath.Join(e.dir, "second")
	if err := os.MkdirAll(second, 0o755); err != nil {
		t.Fatal(err)
	}
	e.extra = fmt.Sprintf("  - name: second\n    kind: folder\n    path: %s\n    settle: 200ms\n    rescan: 1s\n", second)
	if err := a.Apply(context.Background(), e.config(t), "test"); err != nil {
		t.Fatalf("Apply (new folder): %v", err)
	}
	writeFile(t, filepath.Join(second, "s.bin"), 100)

	// 2: upload settings change; the uploader is replaced mid-file and must resume.
	// (The large file must still be on its way, or this reload proves nothing.)
	testutil.WaitFor(t, wait, "the large file recorded as uploading", func() bool {
		mid, err := a.spool.List(context.Background(), spool.ListFilter{State: spool.StateUploading})
		return err == nil && len(mid) == 1 && mid[0].Size == 6<<20
	})
	e.upload = "  chunk_size: 1MiB\n  bandwidth_limit: 4MiB\n  concurrency: 2"
	if err := a.Apply(context.Background(), e.config(t), "test"); err != nil {
		t.Fatalf("Apply (upload settings): %v", err)
	}
	testutil.WaitFor(t, wait, "both files verified", func() bool { return len(verifiedEvents(t, e.events)) == 2 })
	if n := srv.posts.Load(); n != 2 {
		t.Fatalf("ingest saw %d POSTs for 2 files; the reload restarted an upload\n%s", n, logs.String())
	}
	srcs := map[string]int{}
	for _, s := range verifiedEvents(t, e.events) {
		srcs[s]++
	}
	if srcs["inbox"] != 1 || srcs["second"] != 1 {
		t.Fatalf("verified per source = %v, want one from inbox and one from second", srcs)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestApplyRefusesABrokenConfigAndKeepsRunning(t *testing.T) {
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	var logs testutil.SyncBuffer
	a, _ := run(t, e.config(t), &logs)
	// Valid as a file, but one part cannot be built (the CA file is missing): nothing
	// of it may be applied, not even the new folder that could be.
	second := filepath.Join(e.dir, "second")
	if err := os.MkdirAll(second, 0o755); err != nil {
		t.Fatal(err)
	}
	e.extra = fmt.Sprintf("  - name: second\n    kind: folder\n    path: %s\n    settle: 200ms\n", second)
	cfg := e.config(t)
	cfg.Upload.TLS.CAFile = filepath.Join(e.dir, "missing-ca.pem")
	err := a.Apply(context.Background(), cfg, "test")
	if err == nil || !strings.Contains(err.Error(), "upload.tls.ca_file") {
		t.Fatalf("Apply = %v, want an error naming upload.tls.ca_file", err)
	}
	writeFile(t, filepath.Join(second, "not-yet.bin"), 10)
	// The old configuration still moves files; the refused one took nothing.
	writeFile(t, filepath.Join(e.inbox, "after.bin"), 10)
	testutil.WaitFor(t, wait, "a file taken after the refused reload", func() bool { return len(verifiedEvents(t, e.events)) == 1 })
	for _, src := range verifiedEvents(t, e.events) {
		if src != "inbox" {
			t.Fatalf("a file of source %q was taken: the refused config was applied in part", src)
		}
	}
	if _, err := os.Stat(filepath.Join(second, "not-yet.bin")); err != nil {
		t.Fatalf("the refused config's folder was watched: %v", err)
	}
}

func TestApplyReportsKeysThatNeedARestart(t *testing.T) {
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	var logs testutil.SyncBuffer
	a, _ := run(t, e.config(t), &logs)
	cfg := e.config(t)
	cfg.Agent.ID = "other"
	cfg.Log.Level = "warn"
	cfg.Sources = append(cfg.Sources, config.Source{Name: "lab", Kind: "mllp", Listen: "127.0.0.1:0"})
	err := a.Apply(context.Background(), cfg, "test")
	var re *RestartError
	if !errors.As(err, &re) || !errors.Is(err, ErrNeedsRestart) || strings.Join(re.Keys, ",") != "agent.id,sources (kind: mllp)" {
		t.Fatalf("Apply = %v, want a RestartError for agent.id and the mllp source", err)
	}
	a.mu.Lock()
	id, lvl := a.cfg.Agent.ID, a.cfg.Log.Level
	a.mu.Unlock()
	if id != "test" || lvl != "warn" {
		t.Fatalf("running config: agent.id %q (want the old test), log.level %q (want warn)", id, lvl)
	}
	if got := a.opts.LogLevel.Level(); got != slog.LevelWarn {
		t.Fatalf("logger level after the reload = %v, want WARN", got)
	}
}

func TestApplyWhenNotRunning(t *testing.T) {
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	a, stop := run(t, e.config(t), io.Discard)
	stop()
	if err := a.Apply(context.Background(), e.config(t), "test"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Apply after Run returned = %v, want ErrNotRunning", err)
	}
}

func TestMetricsServedByClientGolang(t *testing.T) {
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	addr := testutil.FreePort(t)
	cfg := e.config(t)
	cfg.HTTP.Listen = addr
	a, stop := run(t, cfg, io.Discard)
	if err := a.Apply(context.Background(), cfg, "test"); err != nil {
		t.Fatalf("Apply of the same config: %v", err)
	}
	writeFile(t, filepath.Join(e.inbox, "m.bin"), 10)
	testutil.WaitFor(t, wait, "the verified event", func() bool { return len(verifiedEvents(t, e.events)) == 1 })
	var body string
	testutil.WaitFor(t, wait, "/metrics to count the verified item", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200 && (strings.Contains(body, `courier_items{state="done"} 1`))
	})
	for _, want := range []string{"# TYPE courier_items gauge", "courier_spool_bytes", "courier_upload_link_up 1",
		`courier_config_reloads_total{result="applied"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Fatal("/metrics still served after Run returned")
	}
}

// TestApplySwapsMQTTFeeds: a reload that changes an mqtt source's topics replaces
// the connection and its feeds; messages on the new topic are spooled and announced
// on the broker, and the old topic is no longer taken.
func TestApplySwapsMQTTFeeds(t *testing.T) {
	noLeaks(t)
	b := mosquittotest.Start(t)
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	mqttYAML := func(topic string) string {
		return fmt.Sprintf("  - name: hub\n    kind: mqtt\n    topics: [%q]\n    qos: 1\n", topic)
	}
	e.extra = mqttYAML("old/+/files/#")
	e.tail = "mqtt:\n  broker: " + b.URL() + "\n"
	withBroker := func() *config.Config { return e.config(t) }
	var logs testutil.SyncBuffer
	a, stop := run(t, withBroker(), &logs)
	pub := func(topic, body string) {
		t.Helper()
		host, port, _ := strings.Cut(b.Addr(), ":")
		cmd := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-t", topic, "-q", "1", "-m", body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	subscribed := func() {
		t.Helper()
		a.mu.Lock()
		mq := a.mq
		a.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for _, f := range mq.feeds {
			if err := f.WaitSubscribed(ctx); err != nil {
				t.Fatalf("feed not subscribed: %v", err)
			}
		}
	}
	subscribed()
	pub("old/dev1/files/a", "before the reload")
	testutil.WaitFor(t, wait, "the message on the old topic verified", func() bool { return len(verifiedEvents(t, e.events)) == 1 })

	e.extra = mqttYAML("new/+/files/#")
	if err := a.Apply(context.Background(), withBroker(), "test"); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	subscribed()
	pub("old/dev1/files/b", "old topic after the reload")
	pub("new/dev1/files/c", "new topic after the reload")
	testutil.WaitFor(t, wait, "the message on the new topic verified", func() bool { return len(verifiedEvents(t, e.events)) == 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(context.Background(), spool.Options{Dir: filepath.Join(e.dir, "spool"), Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	items, err := sp.List(context.Background(), spool.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	// The old filter stays in the persistent session (agent/mqtt does not unsubscribe
	// what no feed routes, after a reload as after a restart): its message is recorded
	// as rejected, not taken by the source.
	hub := 0
	for _, it := range items {
		if it.Source == "hub" {
			hub++
		} else if it.State != spool.StateRejected {
			t.Errorf("item of source %s is %s, want rejected", it.Source, it.State)
		}
	}
	if hub != 2 {
		t.Fatalf("%d items of source hub, want 2 (the old topic must not be taken after the reload)", hub)
	}
}
