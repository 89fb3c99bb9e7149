package faulttest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecourier/courier/spool"
)

// TestCorruptDatabase is issue 10's break 2: a damaged database must not crash-loop the
// agent or let status report plausible counts. Open (agent, CLI, status) refuses with
// ErrCorrupt naming the file and the recovery command; verify reports it and checks
// the files against their descriptions; recover moves the damaged file aside (kept)
// and rebuilds every row.
func TestCorruptDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	t.Parallel()
	const n = 20
	dir := t.TempDir()
	q := runChild(t, dir, n, false)
	db := filepath.Join(dir, "spool.db")
	corruptPages(t, db)
	ctx := context.Background()

	_, err := spool.Open(ctx, spool.Options{Dir: dir})
	if !errors.Is(err, spool.ErrCorrupt) {
		t.Fatalf("open of a damaged database: %v, want ErrCorrupt", err)
	}
	for _, want := range []string{db, "courier spool recover", "damaged"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("the error does not say %q: %v", want, err)
		}
	}
	if _, err := spool.OpenReadOnly(ctx, dir); !errors.Is(err, spool.ErrCorrupt) {
		t.Fatalf("read-only open (status) of a damaged database: %v, want ErrCorrupt", err)
	}
	rep, err := spool.Verify(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !strings.Contains(rep.Database, "damaged") || rep.Files != n || len(rep.Problems) != 0 {
		t.Fatalf("verify: %+v, want the database reported damaged and %d intact files", rep, n)
	}

	rec, err := spool.Recover(ctx, spool.Options{Dir: dir})
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if rec.MovedAside == "" || rec.Recovered != n {
		t.Fatalf("recover: %+v, want the database moved aside and %d rows rebuilt", rec, n)
	}
	if fi, err := os.Stat(rec.MovedAside); err != nil || fi.Size() == 0 {
		t.Fatalf("the damaged database was not kept at %s: %v", rec.MovedAside, err)
	}
	checkAllBack(t, dir, q)
}

// corruptPages overwrites every page after the first with garbage, keeping the header
// so SQLite still opens the file: what a failing disk or a stray write leaves.
func corruptPages(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		t.Fatal("WAL still there after a clean close: the damage would be masked")
	}
	const page = 4096
	if len(b) < 3*page {
		t.Fatalf("database only %d bytes", len(b))
	}
	for i := page; i < len(b); i++ {
		b[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
