package agent

import (
	"context"
	"log/slog"
	"net"
	"time"

	"encoding/json"
	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/ingest"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecourier/courier/agent/statuspage"
	"github.com/edgecourier/courier/internal/testutil"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStatusPageAndLinkWhileIngestDown: with nothing listening at the endpoint, the
// one link state goes down and every view says so: /readyz answers 503 with the
// reason, the page's data shows the link down with advice and the waiting file,
// and /metrics has courier_upload_link_up 0 and link_state{state="down"} 1. With
// an ingest, the page counts the verified file and serves its HTML.
func TestStatusPageAndLinkWhileIngestDown(t *testing.T) {
	e := newEnv(t, "http://"+testutil.FreePort(t)+"/files/")
	addr := testutil.FreePort(t)
	cfg := e.config(t)
	cfg.HTTP.Listen = addr
	_, stop := run(t, cfg, io.Discard)
	defer stop()
	writeFile(t, filepath.Join(e.inbox, "a.bin"), 100)

	var v statuspage.View
	testutil.WaitFor(t, wait, "the page to show the link down", func() bool {
		code, body := get(t, "http://"+addr+"/api/status")
		v = statuspage.View{}
		return code == 200 && json.Unmarshal([]byte(body), &v) == nil && v.Link.State == "down"
	})
	if v.Link.Reason == "" || v.Link.Advice == "" || v.Link.Since == nil {
		t.Errorf("link down without reason, advice or since: %+v", v.Link)
	}
	if v.Agent != "test" || v.Config.Source != "local" || v.Counts["waiting"]+v.Counts["uploading"]+v.Counts["received"] != 1 {
		t.Errorf("view: agent %q config %+v counts %v", v.Agent, v.Config, v.Counts)
	}
	code, body := get(t, "http://"+addr+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "upload link down") {
		t.Errorf("/readyz = %d %q, want 503 naming the link down", code, body)
	}
	_, body = get(t, "http://"+addr+"/metrics")
	for _, want := range []string{"courier_upload_link_up 0", `courier_upload_link_state{state="down"} 1`,
		`courier_upload_link_state{state="up"} 0`, "courier_build_info{", "go_goroutines", "courier_spool_limit_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	code, body = get(t, "http://"+addr+"/")
	if code != 200 || !strings.Contains(body, "<html") {
		t.Errorf("/ = %d, want the page:\n%.200s", code, body)
	}
}

// TestStatusPageCountsVerified: with an ingest, the page shows the link up, the
// verified file in the recent list and the counter of uploaded bytes.
func TestStatusPageCountsVerified(t *testing.T) {
	srv := startIngest(t)
	e := newEnv(t, srv.url)
	addr := testutil.FreePort(t)
	cfg := e.config(t)
	cfg.HTTP.Listen = addr
	_, stop := run(t, cfg, io.Discard)
	defer stop()
	writeFile(t, filepath.Join(e.inbox, "b.bin"), 1000)
	var v statuspage.View
	testutil.WaitFor(t, wait, "the page to list the verified file", func() bool {
		code, body := get(t, "http://"+addr+"/api/status")
		v = statuspage.View{}
		return code == 200 && json.Unmarshal([]byte(body), &v) == nil && len(v.Recent) == 1
	})
	if v.Link.State != "up" || v.Recent[0].Size != 1000 || len(v.History) == 0 {
		t.Errorf("view: link %+v recent %+v history %d samples", v.Link, v.Recent, len(v.History))
	}
	if code, _ := get(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d with the link up", code)
	}
	_, body := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{"courier_uploaded_bytes_total 1000", "courier_files_verified_total 1", "courier_last_verified_timestamp_seconds ",
		"courier_free_disk_bytes ", "process_start_time_seconds"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if v.Spool.FreeDisk <= 0 {
		t.Errorf("page: free disk %d", v.Spool.FreeDisk)
	}
}

// TestLinkRecoveryWakesWaiting: with upload.retry at an hour, a file that arrived
// while the ingest was down is verified once an ingest listens at the endpoint
// (the link's recovery wakes waiting items; the uploader also holds items while
// the link is down without spending their backoff, so this checks the outcome).
func TestLinkRecoveryWakesWaiting(t *testing.T) {
	addr := testutil.FreePort(t)
	e := newEnv(t, "http://"+addr+"/files/")
	cfg := e.config(t)
	cfg.Upload.Retry.Initial, cfg.Upload.Retry.Max = config.Duration(time.Hour), config.Duration(time.Hour)
	a, stop := run(t, cfg, io.Discard)
	defer stop()
	writeFile(t, filepath.Join(e.inbox, "w.bin"), 100)
	testutil.WaitFor(t, wait, "the link to go down", func() bool { return a.uploader.Link().State == "down" })

	ctx, cancel := context.WithCancel(context.Background())
	srv, err := ingest.New(ctx, ingest.Options{Store: "file://" + t.TempDir(), BasePath: "/files/",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	defer func() { hs.Close(); <-done; srv.Close(); cancel() }()
	testutil.WaitFor(t, wait, "the waiting file to be verified after the link came back", func() bool {
		return len(verifiedEvents(t, e.events)) == 1
	})
}
