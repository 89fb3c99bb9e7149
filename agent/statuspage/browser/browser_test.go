package browser

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/ingest"
	"github.com/edgecourier/courier/internal/testutil"
)

var screenshot = flag.String("screenshot", "", "write the outage screenshot (PNG) here as well as into the test's temp dir")

const chromiumPath = "/usr/bin/chromium"

const wait = 60 * time.Second

// ingestServer is a real courier-ingest on loopback refusing files over maxSize
// (413), which the agent quarantines; stop closes it (the link goes down).
func ingestServer(t *testing.T, maxSize int64) (url string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := ingest.New(ctx, ingest.Options{Store: "file://" + t.TempDir(), BasePath: "/files/",
		MaxSize: maxSize, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		hs.Close()
		<-done
		srv.Close()
		cancel()
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String() + "/files/", stop
}

func writeFile(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + len(path))
	}
	tmp := path + ".part"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// pageState is what a person reads on the page.
type pageState struct {
	Loaded     bool   `json:"loaded"`
	State      string `json:"state"`
	Verified   int    `json:"verified"`
	Recent     int    `json:"recent"`
	Link       string `json:"link"`
	Reason     string `json:"reason"`
	Advice     string `json:"advice"`
	Quarantine string `json:"quarantine"`
	Config     string `json:"config"`
	ConfigSHA  string `json:"config_sha"`
	FreeDisk   string `json:"free_disk"`
}

const readPage = `(() => {
  const n = (s) => { const r = document.querySelector('#counts tr[data-state="' + s + '"] td.num'); return r ? parseInt(r.textContent, 10) : 0; };
  const t = (id) => (document.getElementById(id) || {}).textContent || '';
  return {
    loaded: document.body.dataset.loaded === 'true', state: t('state'),
    verified: n('verified') + n('published') + n('done'),
    recent: document.querySelectorAll('#recent tbody tr').length,
    link: t('link-state'), reason: t('link-reason'), advice: t('link-advice'),
    quarantine: t('quarantined'), config: t('cfg-source'),
    config_sha: t('cfg-sha'), free_disk: t('free-disk'),
  };
})()`

// TestStatusPageInChromium: chromium shows the verified count going up while
// files flow to a real ingest, a refused file quarantined with its retry command,
// and, with the ingest stopped, the link down with its reason and advice.
func TestStatusPageInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s missing (make test-deps installs Debian's chromium): %v", chromiumPath, err)
	}
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Fatal(err)
	}
	endpoint, stopIngest := ingestServer(t, 64<<10)
	dir := t.TempDir()
	inbox := filepath.Join(dir, "inbox")
	if err := os.MkdirAll(inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	listen := testutil.FreePort(t)
	cfgPath := filepath.Join(dir, "courier.yaml")
	yaml := fmt.Sprintf(`agent:
  id: clinic-7
  data_dir: %s
upload:
  endpoint: %s
  retry: {initial: 100ms, max: 1s}
sources:
  - name: inbox
    kind: folder
    path: %s
    settle: 200ms
    rescan: 1s
events:
  file: %s
http:
  listen: %s
`, filepath.Join(dir, "spool"), endpoint, inbox, filepath.Join(dir, "events.jsonl"), listen)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	a, err := agent.New(context.Background(), cfg, agent.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(context.Background())
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	defer func() {
		acancel()
		select {
		case <-adone:
		case <-time.After(wait):
			t.Error("agent did not stop within a minute")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:0:0],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 1400))
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer allocCancel()
	bctx, bcancel := chromedp.NewContext(allocCtx)
	defer bcancel()
	if err := chromedp.Do(bctx, chromedp.Navigate("http://"+listen+"/")); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	read := func() pageState {
		cctx, cancel := context.WithTimeout(bctx, wait)
		defer cancel()
		s, err := chromedp.Run(cctx, chromedp.Evaluate[pageState](readPage))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return s
	}
	waitPage := func(what string, ok func(pageState) bool) pageState {
		t.Helper()
		var s pageState
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			if s = read(); ok(s) {
				return s
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Fatalf("the page never showed %s; last read %+v", what, s)
		return s
	}
	first := waitPage("its data", func(s pageState) bool { return s.Loaded })
	if first.Verified != 0 || first.Config != "local" {
		t.Errorf("fresh page: %+v, want nothing verified, config from local", first)
	}
	if want := cfg.Digest(); first.ConfigSHA != want {
		t.Errorf("config digest shown %q, want the local file's %q", first.ConfigSHA, want)
	}
	if first.FreeDisk == "" || first.FreeDisk == "0 B" {
		t.Errorf("free disk shown as %q", first.FreeDisk)
	}

	// Files flow: the count a person reads goes up, one after another.
	for i := 1; i <= 3; i++ {
		writeFile(t, filepath.Join(inbox, fmt.Sprintf("scan-%d.dcm", i)), 4000*i)
		waitPage(fmt.Sprintf("%d verified", i), func(s pageState) bool { return s.Verified >= i && s.Recent >= i })
	}
	up := read()
	if up.Link != "up" || up.State != "online" {
		t.Errorf("link while files flow = %q, agent %q, want up and online", up.Link, up.State)
	}

	// A file over the ingest's limit is refused for itself: quarantined, with
	// the command that sends it again.
	writeFile(t, filepath.Join(inbox, "too-big.dcm"), 100<<10)
	q := waitPage("a quarantined item", func(s pageState) bool { return strings.Contains(s.Quarantine, "courier spool retry") })
	if !strings.Contains(q.Quarantine, "courier spool retry --config "+cfgPath+" ") {
		t.Errorf("quarantined item %q lacks the retry command for %s", q.Quarantine, cfgPath)
	}
	if strings.Contains(q.Quarantine, "too-big") {
		t.Errorf("page shows a file name: %q", q.Quarantine)
	}

	// The ingest goes away: the link reads down, with its reason and advice.
	stopIngest()
	writeFile(t, filepath.Join(inbox, "scan-4.dcm"), 5000)
	down := waitPage("the link down", func(s pageState) bool { return s.Link == "down" })
	if down.State != "degraded" {
		t.Errorf("top badge during the outage = %q, want degraded", down.State)
	}
	if down.Reason == "" || down.Advice == "" {
		t.Errorf("link down without reason or advice: %+v", down)
	}
	if down.Verified != up.Verified {
		t.Errorf("verified count moved from %d to %d with no ingest", up.Verified, down.Verified)
	}
	t.Logf("outage as shown: link %s — %s — %s", down.Link, down.Reason, down.Advice)

	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	for _, p := range []string{filepath.Join(t.TempDir(), "status-page.png"), *screenshot} {
		if p == "" {
			continue
		}
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", p, len(png))
	}
}

// TestMain checks that the agent, the ingest and chromedp leave no goroutine
// behind (tusd's delayed request contexts end on their own timer).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/tus/tusd/v2/pkg/handler.newDelayedContext.func1"))
}
