package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/testutil"
)

// TestSIGHUPReloadsConfig: `systemctl reload` (SIGHUP) makes a running `courier run`
// read its config again. A valid change (a second folder) applies without a restart
// (same pid, the file in the new folder is verified); an invalid file is refused
// with its key named, and the agent goes on with the config it had.
func TestSIGHUPReloadsConfig(t *testing.T) {
	skipOnWindows(t)
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url()})
	a := e.startAgent()
	first := randBytes(3000, 21)
	writeFile(t, filepath.Join(e.inbox, "first.bin"), first)
	e.waitVerified(1, 2*time.Minute)

	second := filepath.Join(e.root, "second")
	if err := os.MkdirAll(second, 0o755); err != nil {
		t.Fatal(err)
	}
	valid := strings.Replace(string(mustRead(t, e.cfgPath)), "events:\n",
		fmt.Sprintf("  - name: second\n    kind: folder\n    path: %s\n    settle: 500ms\n    rescan: 2s\nevents:\n", second), 1)
	writeText(t, e.cfgPath, valid)
	a.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, time.Minute, "the reload to be logged", func() bool {
		return strings.Contains(a.out.String(), "configuration reloaded")
	})
	fromSecond := randBytes(4000, 22)
	writeFile(t, filepath.Join(second, "second.bin"), fromSecond)
	got := e.waitVerified(2, 2*time.Minute)
	if ev, ok := got[sum(fromSecond)]; !ok {
		t.Fatal("the file in the folder added by the reload was not verified")
	} else if stored := in.object(t, ev.Data.FileID); string(stored) != string(fromSecond) {
		t.Fatal("bytes at the server differ from the file in the new folder")
	}

	invalid := strings.Replace(valid, "settle: 500ms", "settle: -2s", 1)
	writeText(t, e.cfgPath, invalid)
	a.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, time.Minute, "the refused reload to be logged with its key", func() bool {
		out := a.out.String()
		return strings.Contains(out, "invalid configuration; keeping the running one") && strings.Contains(out, "sources[0].settle")
	})
	select {
	case <-a.done:
		t.Fatal("the agent exited after a reload with an invalid config")
	default:
	}
	third := randBytes(5000, 23)
	writeFile(t, filepath.Join(e.inbox, "third.bin"), third)
	e.waitVerified(3, 2*time.Minute)
	assertOneEventPerFile(t, e, first, fromSecond, third)
	if n := strings.Count(a.out.String(), "courier agent running"); n != 1 {
		t.Fatalf("the agent started %d times; a reload must not restart it", n)
	}
	a.stop()
}
