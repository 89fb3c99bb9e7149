package spool

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openTest(t testing.TB, opts Options) *Spool {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func receive(t testing.TB, s *Spool, in Intake, data []byte) *Item {
	t.Helper()
	it, err := s.Receive(context.Background(), in, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return it
}

func hexSHA256(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
func hexSHA1(b []byte) string   { h := sha1.Sum(b); return hex.EncodeToString(h[:]) }

// filesUnder lists regular files below dir, relative to it.
func filesUnder(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

func mustState(t testing.TB, s *Spool, id string, want State) *Item {
	t.Helper()
	it, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	if it.State != want {
		t.Fatalf("item %s: state %s, want %s", id, it.State, want)
	}
	return it
}

func TestOpenRequiresDir(t *testing.T) {
	if _, err := Open(context.Background(), Options{}); err == nil {
		t.Fatal("Open without Dir: no error")
	}
}

func TestSecondExclusiveOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	_, err := Open(context.Background(), Options{Dir: dir})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestSharedBesideExclusive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	agent := openTest(t, Options{Dir: dir})
	cli := openTest(t, Options{Dir: dir, Shared: true})

	in := Intake{Source: "lab", SourceKind: "folder"}
	first := receive(t, agent, in, []byte("first"))
	got, err := cli.Get(ctx, first.ID)
	if err != nil || got.SHA256 != first.SHA256 {
		t.Fatalf("shared Get: %+v, %v", got, err)
	}
	lease, err := agent.Lease(ctx, "w1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Quarantine(ctx, lease.ID, "w1", "http 413"); err != nil {
		t.Fatal(err)
	}

	// Both processes write at once: the CLI retries while the agent keeps receiving.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 40; i++ {
			if _, err := agent.Receive(ctx, in, bytes.NewReader([]byte{byte(i), 'x'})); err != nil {
				errs <- err
			}
		}
	}()
	n, err := cli.RetryState(ctx, StateQuarantined)
	if err != nil || n != 1 {
		t.Fatalf("shared RetryState: %d, %v", n, err)
	}
	for i := 0; i < 20; i++ {
		if _, err := cli.Counts(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("agent Receive beside CLI: %v", err)
	}
	mustState(t, agent, first.ID, StateReceived)
	c, err := cli.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.ByState[StateReceived] != 41 {
		t.Fatalf("received = %d, want 41", c.ByState[StateReceived])
	}
}
