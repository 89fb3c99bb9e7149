package faulttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecourier/courier/spool"
)

// TestLostDatabase is issue 10's break 1: 20 files queued (sources released), then the
// database is emptied, loses its WAL after a SIGKILL, or is deleted. Opening must
// refuse and say what to do, nothing may be deleted, and `spool recover` must bring
// every row back with its bytes.
func TestLostDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	const n = 20
	for _, tc := range []struct {
		name   string
		kill   bool
		damage func(t *testing.T, dir string)
	}{
		{"truncated", false, func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "spool.db"), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"wal deleted after SIGKILL", true, func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "spool.db-wal")); err != nil {
				t.Fatalf("no WAL after SIGKILL: %v", err)
			}
		}},
		{"deleted after SIGKILL", true, func(t *testing.T, dir string) {
			for _, f := range []string{"spool.db", "spool.db-wal", "spool.db-shm"} {
				if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			q := runChild(t, dir, n, tc.kill)
			tc.damage(t, dir)
			ctx := context.Background()

			_, err := spool.Open(ctx, spool.Options{Dir: dir})
			if !errors.Is(err, spool.ErrNeedsRecovery) {
				t.Fatalf("open after the database was lost: %v, want ErrNeedsRecovery", err)
			}
			for _, want := range []string{filepath.Join(dir, "spool.db"), "courier spool recover", "nothing was deleted"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("the error does not say %q: %v", want, err)
				}
			}
			// Refusing twice changes nothing: the CLI and status refuse too.
			if _, err := spool.Open(ctx, spool.Options{Dir: dir, Shared: true}); !errors.Is(err, spool.ErrNeedsRecovery) {
				t.Fatalf("shared open: %v, want ErrNeedsRecovery", err)
			}
			if _, err := spool.OpenReadOnly(ctx, dir); !errors.Is(err, spool.ErrNeedsRecovery) {
				t.Fatalf("read-only open: %v, want ErrNeedsRecovery", err)
			}
			rep, err := spool.Verify(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || rep.Files != n || len(rep.Problems) != 0 {
				t.Fatalf("verify of a lost database: %+v, want the database reported and %d intact files", rep, n)
			}

			rec, err := spool.Recover(ctx, spool.Options{Dir: dir})
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			if rec.Recovered != n || len(rec.Mismatched)+len(rec.Undescribed)+len(rec.Unreadable) != 0 {
				t.Fatalf("recover: %+v, want %d rebuilt", rec, n)
			}
			checkAllBack(t, dir, q)
		})
	}
}

// checkAllBack opens the spool as the agent does and checks that every queued item is
// there, received, with its bytes, digest, priority, metadata and fingerprint.
func checkAllBack(t *testing.T, dir string, q queued) {
	t.Helper()
	ctx := context.Background()
	s, err := spool.Open(ctx, spool.Options{Dir: dir, Sinks: []string{"file"}})
	if err != nil {
		t.Fatalf("open after recovery: %v", err)
	}
	defer s.Close()
	items, err := s.List(ctx, spool.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != len(q) {
		t.Fatalf("%d items after recovery, want %d", len(items), len(q))
	}
	byDigest := map[string]int{}
	for i := range len(q) {
		byDigest[hexSHA256(content(i))] = i
	}
	for _, it := range items {
		sum, ok := q[it.ID]
		if !ok {
			t.Fatalf("item %s was not queued by the child", it.ID)
		}
		if it.State != spool.StateReceived || it.SHA256 != sum {
			t.Fatalf("item %s: %s, sha256 %s; want received, %s", it.ID, it.State, it.SHA256, sum)
		}
		b, err := os.ReadFile(s.ContentPath(it.ID))
		if err != nil || hexSHA256(b) != sum || int64(len(b)) != it.Size {
			t.Fatalf("item %s: stored bytes do not match (%v)", it.ID, err)
		}
		i := byDigest[sum]
		if it.Priority != spool.Priority(i%3) || it.Meta["n"] != fmt.Sprint(i) || it.Source != "lab" {
			t.Fatalf("item %s: priority %v meta %v source %q, want %v %d lab", it.ID, it.Priority, it.Meta, it.Source, spool.Priority(i%3), i)
		}
		if ok, err := s.HasFingerprint(ctx, "lab", fmt.Sprint("fp-", i)); !ok || err != nil {
			t.Fatalf("item %s: fingerprint fp-%d not back (%v)", it.ID, i, err)
		}
	}
	c, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bytes int64
	for i := range len(q) {
		bytes += int64(len(content(i)))
	}
	if c.Bytes != bytes {
		t.Fatalf("spooled bytes %d, want %d", c.Bytes, bytes)
	}
	if rows, err := s.VerifyAudit(ctx); err != nil || rows < len(q) {
		t.Fatalf("audit after recovery: %d rows, %v", rows, err)
	}
	s.Close()
	rep, err := spool.Verify(ctx, dir)
	if err != nil || !rep.OK() || rep.Items != len(q) {
		t.Fatalf("verify after recovery: %+v, %v", rep, err)
	}
}
