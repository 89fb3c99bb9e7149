package folder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecourier/courier/internal/testutil"
	"github.com/edgecourier/courier/spool"
)

func TestMain(m *testing.M) {
	if p := os.Getenv(pausedWriterEnv); p != "" {
		pausedWriter(p) // a child process of TestPausedWriterFileArrivesWhole
		return
	}
	goleak.VerifyTestMain(m)
}

// waitTimeout is generous: the tests must pass on a noisy 2-core machine.
const waitTimeout = 30 * time.Second

func openSpool(t testing.TB, opts spool.Options) *spool.Spool {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	sp, err := spool.Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// running is a Source started by startSource; stop ends it and waits.
type running struct {
	*Source
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return after cancel")
		}
	})
}

// testOptions are quick options for tests: short settle, a logger into the test output.
func testOptions(t testing.TB, root string) Options {
	return Options{
		Name:   "lab-inbox",
		Path:   root,
		Settle: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func startSource(t testing.TB, opts Options, sp Spool, tweak ...func(*Source)) *running {
	t.Helper()
	src, err := New(opts, sp)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, f := range tweak {
		f(src)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Source: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// waitScans waits until n full scans ended after now, so whatever is in the folder
// now has been looked at by a scan (not only by events).
func waitScans(t testing.TB, r *running, n int) {
	t.Helper()
	for range n {
		since := time.Now()
		testutil.WaitFor(t, waitTimeout, "a full rescan", func() bool { return r.counters().LastScan.After(since) })
	}
}

func allItems(t testing.TB, sp *spool.Spool) []*spool.Item {
	t.Helper()
	its, err := sp.List(context.Background(), spool.ListFilter{})
	if err != nil {
		t.Fatalf("list items: %v", err)
	}
	return its
}

// itemsFor returns the items whose SourceRef is ref.
func itemsFor(t testing.TB, sp *spool.Spool, ref string) []*spool.Item {
	var out []*spool.Item
	for _, it := range allItems(t, sp) {
		if it.SourceRef == ref {
			out = append(out, it)
		}
	}
	return out
}

// waitItem waits for exactly one item for ref in one of the given states and returns it.
func waitItem(t testing.TB, sp *spool.Spool, ref string, states ...spool.State) *spool.Item {
	t.Helper()
	var got *spool.Item
	testutil.WaitFor(t, waitTimeout, "an item for "+ref, func() bool {
		its := itemsFor(t, sp, ref)
		if len(its) == 0 {
			return false
		}
		if len(its) > 1 {
			t.Fatalf("%d items for %s, want 1", len(its), ref)
		}
		got = its[0]
		return true
	})
	ok := len(states) == 0
	for _, s := range states {
		ok = ok || got.State == s
	}
	if !ok {
		t.Fatalf("item for %s is %s (reason %q), want one of %v", ref, got.State, got.Reason, states)
	}
	return got
}

func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// storedBytes reads what the spool holds for an item.
func storedBytes(t testing.TB, sp *spool.Spool, id string) []byte {
	t.Helper()
	f, err := sp.OpenContent(id)
	if err != nil {
		t.Fatalf("open content of %s: %v", id, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func gone(p string) bool {
	_, err := os.Lstat(p)
	return errors.Is(err, os.ErrNotExist)
}
