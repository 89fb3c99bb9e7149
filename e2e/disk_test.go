package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFullDisk: the spool lives on a small filesystem (a tmpfs we mount). Files
// that do not fit stay in the folder — backpressure, not loss — and are taken
// once uploads have freed the space.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url(), Bandwidth: "2MiB", Chunk: "1MiB"})
	os.MkdirAll(e.data, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "courier-e2e", e.data).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", e.data).Run() })
	cfg := strings.Replace(string(mustRead(t, e.cfgPath)), "  min_free_disk: 1MiB", "  min_free_disk: 2MiB", 1)
	writeText(t, e.cfgPath, cfg)

	files := map[string][]byte{}
	for i := 0; i < 4; i++ {
		b := randBytes(3<<20, byte(60+i))
		files[sum(b)] = b
		writeFile(t, filepath.Join(e.inbox, "scan-"+string(rune('a'+i))+".bin"), b)
	}
	agent := e.startAgent()
	got := e.waitVerified(len(files), 3*time.Minute)
	for d := range files {
		if _, ok := got[d]; !ok {
			t.Errorf("file %.12s was not verified", d)
		}
	}
	if !strings.Contains(agent.out.String(), "spool is full") {
		t.Errorf("12 MiB of files on a 12 MiB spool with 2 MiB kept free never hit backpressure; the test did not test it")
	}
	assertOneEventPerFile(t, e, contentsOf(files)...)
}
