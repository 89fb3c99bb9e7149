package folder

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/edgecourier/courier/internal/testutil"
)

// procWriters is the fallback when no lease can be taken (not the file's owner, a
// filesystem without leases): it must see another process's write descriptor and
// must not mistake a reader for a writer.
func TestProcWritersSeesAnotherProcess(t *testing.T) {
	p := filepath.Join(t.TempDir(), "held.bin")
	writeFile(t, p, []byte("x"))
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		redirect string
		want     bool
	}{{"3<", false}, {"3>>", true}} {
		ready := filepath.Join(t.TempDir(), "ready")
		cmd := exec.Command("sh", "-c", "exec "+c.redirect+"'"+p+"'; touch '"+ready+"'; exec sleep 60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, waitTimeout, "the child to open the file", func() bool { return exists(ready) })
		got, err := procWriters(fi)
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil || got != c.want {
			t.Fatalf("procWriters with a child holding %q = %v, %v; want %v", c.redirect, got, err, c.want)
		}
		held, err := heldForWriting(p, fi)
		if err != nil || held {
			t.Fatalf("heldForWriting after the child ended = %v, %v; want false", held, err)
		}
	}
}
