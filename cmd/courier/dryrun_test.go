package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgecourier/courier/spool"
)

func TestDryRuns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	ids := seedSpool(t, dir, 2)
	s, err := spool.Open(ctx, spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		l, err := s.Lease(ctx, "w", time.Hour)
		if err != nil || l == nil {
			t.Fatalf("lease: %v", err)
		}
		if l.ID == ids[0] {
			err = s.Quarantine(ctx, l.ID, "w", "test")
		} else {
			err = s.MarkVerified(ctx, l.ID, "w", "loc")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	code, out, errs := runCLI(t, "spool", "retry", "--dry-run", "--config", cfg, ids[0])
	if code != 0 || !strings.Contains(out, "would queue again "+ids[0]) || !strings.Contains(out, "nothing was changed") {
		t.Fatalf("retry --dry-run: %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "spool", "retry", "--dry-run", "--config", cfg, "--state", "quarantined")
	if code != 0 || !strings.Contains(out, "1 item(s) would be queued again") {
		t.Fatalf("retry --dry-run --state: %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCLI(t, "spool", "retry", "--dry-run", "--config", cfg, ids[1]); code != 1 || !strings.Contains(errs, "verified") {
		t.Fatalf("retry --dry-run of a verified item: %d %s", code, errs)
	}
	s, err = spool.Open(ctx, spool.Options{Dir: dir, Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	it, err := s.Get(ctx, ids[0])
	s.Close()
	if err != nil || it.State != spool.StateQuarantined {
		t.Fatalf("dry run changed the item: %v %v", it, err)
	}

	code, out, errs = runCLI(t, "events", "replay", "--dry-run", "--config", cfg, "--since", "1h")
	if code != 0 || !strings.Contains(out, "for item "+ids[1]) || !strings.Contains(out, "nothing was published") {
		t.Fatalf("events replay --dry-run: %d\n%s%s", code, out, errs)
	}
}
