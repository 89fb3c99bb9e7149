//go:build unix

package folder

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgecourier/courier/internal/testutil"
	"github.com/edgecourier/courier/spool"
)

// A symlink that leads outside the root is rejected and moved aside as a link; its
// target is never read, moved or changed. A link inside the root is ignored.
func TestSymlinks(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	sp := openSpool(t, spool.Options{})
	secret := filepath.Join(outside, "secret.txt")
	writeFile(t, secret, []byte("not for upload"))
	writeFile(t, filepath.Join(outside, "dir/inner.txt"), []byte("not for upload either"))
	writeFile(t, filepath.Join(root, "real.txt"), []byte("real"))
	mustSymlink(t, secret, filepath.Join(root, "link.txt"))
	mustSymlink(t, "../../"+filepath.Base(outside)+"/secret.txt", filepath.Join(root, "rel-link.txt"))
	mustSymlink(t, filepath.Join(outside, "dir"), filepath.Join(root, "dirlink"))
	mustSymlink(t, "real.txt", filepath.Join(root, "inside-link.txt"))
	mustSymlink(t, "/nonexistent/elsewhere", filepath.Join(root, "dangling-out"))
	opts := testOptions(t, root)
	opts.Rescan = 300 * time.Millisecond
	r := startSource(t, opts, sp)

	waitItem(t, sp, "real.txt", spool.StateReceived)
	for _, name := range []string{"link.txt", "rel-link.txt", "dirlink", "dangling-out"} {
		it := waitItem(t, sp, name, spool.StateRejected)
		if it.Reason != "symlink points outside the watched folder" || it.Size != 0 {
			t.Errorf("%s: reason %q size %d", name, it.Reason, it.Size)
		}
		aside := filepath.Join(root, RejectedDir, name)
		testutil.WaitFor(t, waitTimeout, name+" moved aside", func() bool { return exists(aside + ".reason.txt") })
		if fi, err := os.Lstat(aside); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: moved-aside entry is not the link: %v %v", name, fi, err)
		}
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "not for upload" {
		t.Fatalf("link target changed: %q %v", b, err)
	}
	if !exists(filepath.Join(outside, "dir/inner.txt")) {
		t.Fatalf("file behind the dir link was touched")
	}
	waitScans(t, r, 2)
	if its := itemsFor(t, sp, "dirlink/inner.txt"); len(its) != 0 {
		t.Fatalf("followed the dir link")
	}
	if its := itemsFor(t, sp, "inside-link.txt"); len(its) != 0 {
		t.Fatalf("inside link taken as well as its target")
	}
	if !exists(filepath.Join(root, "inside-link.txt")) {
		t.Fatalf("inside link removed")
	}
	if st := r.counters(); st.Rejected != 4 || st.Taken != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A named pipe is not a file to read (opening it would block): it is rejected.
func TestFIFORejected(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	if err := unix.Mkfifo(filepath.Join(root, "pipe.hl7"), 0o644); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	startSource(t, testOptions(t, root), sp)
	it := waitItem(t, sp, "pipe.hl7", spool.StateRejected)
	if it.Reason != "not a regular file (named pipe)" {
		t.Fatalf("reason %q", it.Reason)
	}
	testutil.WaitFor(t, waitTimeout, "moved aside", func() bool { return exists(filepath.Join(root, RejectedDir, "pipe.hl7.reason.txt")) })
}

// A folder the agent cannot read does not stop the others.
func TestUnreadableFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: every folder is readable, so there is nothing to test")
	}
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	writeFile(t, filepath.Join(root, "closed/x.txt"), []byte("x"))
	if err := os.Chmod(filepath.Join(root, "closed"), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(root, "closed"), 0o755) })
	writeFile(t, filepath.Join(root, "open/y.txt"), []byte("y"))
	startSource(t, testOptions(t, root), sp)
	waitItem(t, sp, "open/y.txt", spool.StateReceived)
}

// The watched path itself may be a symlink (/srv/lab -> /mnt/share/lab).
func TestSymlinkedRoot(t *testing.T) {
	real := t.TempDir()
	root := filepath.Join(t.TempDir(), "lab")
	mustSymlink(t, real, root)
	sp := openSpool(t, spool.Options{})
	writeFile(t, filepath.Join(real, "sub/present.txt"), []byte("present"))
	r := startSource(t, testOptions(t, root), sp)
	waitItem(t, sp, "sub/present.txt", spool.StateReceived)
	writeFile(t, filepath.Join(real, "later.txt"), []byte("later"))
	waitItem(t, sp, "later.txt", spool.StateReceived)
	testutil.WaitFor(t, waitTimeout, "deleted", func() bool { return gone(filepath.Join(real, "later.txt")) })
	if st := r.counters(); !st.Watching || st.Folders != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// More events than the kernel queues: the watcher overflows, and the rescan it
// triggers (the periodic one is an hour away) still finds every file. The source is
// held up in a fingerprint lookup meanwhile, so that the events pile up.
func TestWatcherOverflowRescans(t *testing.T) {
	limit := 16384
	if b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			limit = v
		}
	}
	if limit > 100_000 {
		t.Skipf("inotify queue holds %d events: too many files to provoke an overflow here", limit)
	}
	root := t.TempDir()
	gate := &gatedSpool{Spool: openSpool(t, spool.Options{}), open: make(chan struct{})}
	var mu sync.Mutex
	var logs bytes.Buffer
	opts := testOptions(t, root)
	opts.After = "keep"
	opts.Settle = time.Hour // count what was seen; take nothing
	opts.Rescan = time.Hour
	opts.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := startSource(t, opts, gate)
	testutil.WaitFor(t, waitTimeout, "watching", func() bool { return r.counters().Folders == 1 })
	writeFile(t, filepath.Join(root, "first"), nil)
	testutil.WaitFor(t, waitTimeout, "the source held up", func() bool { return gate.waiting.Load() })
	n := limit + limit/2
	for i := range n {
		f, err := os.Create(filepath.Join(root, fmt.Sprintf("f%06d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	close(gate.open)
	testutil.WaitFor(t, waitTimeout, "every file seen", func() bool { return r.counters().Settling == n+1 })
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "watcher queue overflowed") {
		t.Fatalf("no overflow after %d files (queue %d)", n, limit)
	}
}

// gatedSpool holds the first fingerprint lookup until open is closed.
type gatedSpool struct {
	*spool.Spool
	open    chan struct{}
	waiting atomic.Bool
}

func (g *gatedSpool) HasFingerprint(ctx context.Context, source, fp string) (bool, error) {
	g.waiting.Store(true)
	select {
	case <-g.open:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return g.Spool.HasFingerprint(ctx, source, fp)
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// The watched folder is a symlink and move: names the real path of a folder
// inside it: the moved file is not taken back on later scans.
func TestMoveTargetUnderAnotherName(t *testing.T) {
	real := t.TempDir()
	root := filepath.Join(t.TempDir(), "lab")
	if err := os.Symlink(real, root); err != nil {
		t.Fatal(err)
	}
	sp := openSpool(t, spool.Options{})
	opts := testOptions(t, root)
	opts.After = "move:" + filepath.Join(real, "done")
	opts.Rescan = 200 * time.Millisecond
	r := startSource(t, opts, sp)
	writeFile(t, filepath.Join(root, "a.txt"), []byte("once"))
	waitItem(t, sp, "a.txt", spool.StateReceived)
	testutil.WaitFor(t, waitTimeout, "the file moved", func() bool { return exists(filepath.Join(real, "done", "a.txt")) })
	waitScans(t, r, 3)
	if items := allItems(t, sp); len(items) != 1 {
		t.Fatalf("%d items for one file: the move target was scanned as part of the inbox", len(items))
	}
	if exists(filepath.Join(real, "done", "done")) {
		t.Fatalf("the moved file was moved again")
	}
}
