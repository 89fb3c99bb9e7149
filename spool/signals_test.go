package spool

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"testing"
	"time"
)

// TestMissingContentQuarantines is issue 7's defect 1 at the spool level: an item whose
// bytes are gone must be recognisable as such by an uploader that checks
// fs.ErrNotExist (it used to get ErrNotFound and put the item back for ever), and the
// quarantine it then does must hold, with its reason and event.
func TestMissingContentQuarantines(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	it := receive(t, s, Intake{Source: "lab"}, []byte("gone"))
	if err := os.Remove(s.ContentPath(it.ID)); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lease(ctx, "w", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.OpenContent(l.ID)
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrContentMissing) {
		t.Fatalf("OpenContent of missing bytes: %v, want ErrContentMissing matching fs.ErrNotExist", err)
	}
	if err := s.Quarantine(ctx, l.ID, "w", "stored content missing"); err != nil {
		t.Fatal(err)
	}
	got := mustState(t, s, it.ID, StateQuarantined)
	if got.Reason != "stored content missing" {
		t.Fatalf("reason %q", got.Reason)
	}
	evs, _ := s.Pending(ctx, DefaultSink, 0)
	if len(evs) != 1 || evs[0].Type != EventQuarantined || evs[0].ItemID != it.ID {
		t.Fatalf("events after quarantine: %+v", evs)
	}
	if _, err := s.Lease(ctx, "w", time.Hour); !errors.Is(err, ErrEmpty) {
		t.Fatalf("a quarantined item was leased again: %v", err)
	}
}

// TestWakeCounterSeesOtherProcesses: a retry through another connection (the CLI
// beside the agent) changes the counter the agent polls, and WakeWaiting makes
// waiting items due at once.
func TestWakeCounterSeesOtherProcesses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	agent := openTest(t, Options{Dir: dir})
	it := receive(t, agent, Intake{Source: "lab"}, []byte("w"))
	l, _ := agent.Lease(ctx, "w", time.Hour)
	if err := agent.MarkWaiting(ctx, l.ID, "w", time.Now().Add(time.Hour), "offline", false); err != nil {
		t.Fatal(err)
	}
	before, err := agent.WakeCounter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Lease(ctx, "w", time.Hour); !errors.Is(err, ErrEmpty) {
		t.Fatalf("lease before its next attempt: %v", err)
	}
	n, err := agent.WakeWaiting(ctx)
	if err != nil || n != 1 {
		t.Fatalf("WakeWaiting: %d, %v", n, err)
	}
	if l, err := agent.Lease(ctx, "w", time.Hour); err != nil || l.ID != it.ID {
		t.Fatalf("lease after WakeWaiting: %v", err)
	}
	agent.Quarantine(ctx, it.ID, "w", "x")
	mid, _ := agent.WakeCounter(ctx)
	if mid == before {
		t.Fatal("WakeWaiting did not move the wake counter")
	}
	cli := openTest(t, Options{Dir: dir, Shared: true})
	if err := cli.Retry(ctx, it.ID); err != nil {
		t.Fatal(err)
	}
	after, err := agent.WakeCounter(ctx)
	if err != nil || after == mid {
		t.Fatalf("wake counter %d -> %d after a retry by another connection (%v)", mid, after, err)
	}
}

// TestSpooledBytesRunningTotal: the total kept by triggers equals the sum of the rows
// through intake, duplicates, finishing, sweeping and deletion.
func TestSpooledBytesRunningTotal(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now, KeepDone: time.Hour})
	check := func(when string) {
		t.Helper()
		got, err := s.SpooledBytes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		s.r.QueryRow(`SELECT COALESCE(SUM(size), 0) FROM items WHERE stored = 1`).Scan(&want)
		if got != want {
			t.Fatalf("%s: running total %d, rows say %d", when, got, want)
		}
	}
	a := receive(t, s, Intake{Source: "lab"}, make([]byte, 100))
	receive(t, s, Intake{Source: "lab"}, make([]byte, 100)) // duplicate: not stored
	receive(t, s, Intake{Source: "lab"}, make([]byte, 250))
	check("after intake")
	if c, _ := s.Counts(ctx); c.Bytes != 350 {
		t.Fatalf("Counts.Bytes %d, want 350", c.Bytes)
	}
	finishItem(t, s, a.ID)
	check("after finishing")
	clk.Advance(2 * time.Hour)
	s.Sweep(ctx)
	check("after the sweep")
	s.w.Exec(`DELETE FROM items`)
	check("after deleting every row")
}

// TestPublishBatch: one call marks many events, finishes the items whose events are
// all out, and skips seqs that no longer exist.
func TestPublishBatch(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{Sinks: []string{"file", "mqtt"}})
	var ids []string
	for _, d := range []string{"a", "b", "c"} {
		it := receive(t, s, Intake{Source: "lab"}, []byte(d))
		l, _ := s.Lease(ctx, "w", time.Hour)
		s.MarkVerified(ctx, l.ID, "w", "loc")
		ids = append(ids, it.ID)
	}
	file, _ := s.Pending(ctx, "file", 0)
	mqtt, _ := s.Pending(ctx, "mqtt", 0)
	// Every file event, and the mqtt event of a only.
	seqs := []int64{9999}
	for _, ev := range file {
		seqs = append(seqs, ev.Seq)
	}
	for _, ev := range mqtt {
		if ev.ItemID == ids[0] {
			seqs = append(seqs, ev.Seq)
		}
	}
	if err := s.MarkPublishedBatch(ctx, seqs); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, ids[0], StateDone)
	mustState(t, s, ids[1], StateVerified)
	mustState(t, s, ids[2], StateVerified)
	if _, err := os.Stat(s.ContentPath(ids[0])); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("bytes of the finished item still there: %v", err)
	}
	if err := s.MarkPublished(ctx, 9999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkPublished of an unknown seq: %v, want ErrNotFound", err)
	}
}

// TestOpenReadOnlyWritesNothing: status must work where nothing may be written.
func TestOpenReadOnlyWritesNothing(t *testing.T) {
	ctx := context.Background()
	if _, err := OpenReadOnly(ctx, t.TempDir()+"/none"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read-only open of no spool: %v, want fs.ErrNotExist", err)
	}
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	it := receive(t, s, Intake{Source: "lab"}, []byte("r"))
	s.Close()
	ro, err := OpenReadOnly(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if c, err := ro.Counts(ctx); err != nil || c.ByState[StateReceived] != 1 || c.Bytes != 1 {
		t.Fatalf("counts: %+v, %v", c, err)
	}
	if err := ro.Retry(ctx, it.ID); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Retry on a read-only spool: %v, want ErrReadOnly", err)
	}
}

// TestOldItemsGetDescriptions: an item stored before descriptions existed gets one at
// the next start, so it too can be recovered if the database is lost.
func TestOldItemsGetDescriptions(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	it := receive(t, s, Intake{Source: "lab", Fingerprint: "fp", Priority: PriorityHigh}, []byte("old"))
	if err := os.Remove(s.sidecarPath(it.ID)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, Options{Dir: dir})
	sc, err := readSidecar(s.sidecarPath(it.ID))
	if err != nil {
		t.Fatalf("no description after restart: %v", err)
	}
	if sc.ID != it.ID || sc.SHA256 != it.SHA256 || sc.Size != 3 || sc.Priority != PriorityHigh ||
		sc.Fingerprint != "fp" || !sc.ReceivedAt.Equal(it.ReceivedAt) {
		t.Fatalf("description %+v does not match %+v", sc, it)
	}
}
