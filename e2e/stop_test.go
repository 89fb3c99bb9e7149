package e2e

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/testutil"
)

// TestStopSIGTERMMidUpload is what `systemctl stop courier` (and the Windows
// service stop) does: SIGTERM while a chunk is on the wire. The agent exits 0
// within the unit's TimeoutStopSec (30s), and the next start resumes the
// upload from the server's offset, sending at most about one chunk again.
func TestStopSIGTERMMidUpload(t *testing.T) {
	skipOnWindows(t)
	in := startIngest(t, t.TempDir(), "")
	px := startProxy(t, "http://"+in.addr)
	const size = 12 << 20
	const chunkSize = 1 << 20
	e := newEnv(t, agentConf{Endpoint: px.url(), Chunk: "1MiB", Bandwidth: "3MiB"})
	body := randBytes(size, 91)
	writeFile(t, filepath.Join(e.inbox, "scan.bin"), body)

	a := e.startAgent()
	testutil.WaitFor(t, 2*time.Minute, "a third of the file at the server", func() bool { return px.patchBytes.Load() > size/3 })
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(30 * time.Second): // the unit's TimeoutStopSec
		t.Fatalf("the agent did not exit within 30s of SIGTERM (systemd would SIGKILL it)")
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0 (a clean stop)", code)
	}
	sentBefore := px.patchBytes.Load()
	if sentBefore >= size {
		t.Fatalf("the upload finished before SIGTERM (%d bytes sent); nothing was tested", sentBefore)
	}

	assertResumed(t, e, in, px, body, int64(chunkSize), "SIGTERM", sentBefore)
}
