package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/internal/testutil"
)

// TestStatusExitCodes: `courier status` exits 3 before the agent ever ran, 1 while
// it runs with nothing listening at the endpoint (link down, with the reason and
// what to do), and 3 again once it stopped.
func TestStatusExitCodes(t *testing.T) {
	dir, inbox := t.TempDir(), t.TempDir()
	p := filepath.Join(t.TempDir(), "courier.yaml")
	y := fmt.Sprintf("agent: {id: test, data_dir: %q}\nupload: {endpoint: \"http://%s/files/\", retry: {initial: 100ms, max: 1s}}\n"+
		"sources: [{name: inbox, kind: folder, path: %q, settle: 100ms, rescan: 500ms}]\nevents: {mqtt: false}\n", dir, testutil.FreePort(t), inbox)
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI(t, "status", "--config", p); code != statusNotRunning {
		t.Fatalf("status before the first run: exit %d, want 3\n%s%s", code, out, errs)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(context.Background(), cfg, agent.Options{Logger: slog.New(slog.DiscardHandler), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := os.WriteFile(filepath.Join(inbox, "x.bin"), make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	var code int
	var out string
	testutil.WaitFor(t, time.Minute, "status to report the link down", func() bool {
		code, out, _ = runCLI(t, "status", "--config", p)
		return code == statusDegraded && strings.Contains(out, "upload link: down")
	})
	for _, want := range []string{"agent test: online (version test)", "connection refused", "what to do: Nothing answers at the upload endpoint"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("courier status during the outage (exit %d):\n%s", code, out)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if code, out, _ := runCLI(t, "status", "--config", p); code != statusNotRunning || !strings.Contains(out, ": stopped") {
		t.Errorf("status after stop: exit %d, want 3\n%s", code, out)
	}
}
