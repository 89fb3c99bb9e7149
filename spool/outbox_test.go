package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestOutboxTwoSinks(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now, Sinks: []string{"file", "mqtt"}})
	start := clk.Now()
	item := receive(t, s, Intake{Source: "lab"}, []byte("payload"))
	it, _ := s.Lease(ctx, "w", time.Minute)
	clk.Advance(time.Second)
	if err := s.MarkVerified(ctx, it.ID, "w", "https://ingest/files/"+it.ID); err != nil {
		t.Fatal(err)
	}
	got := mustState(t, s, item.ID, StateVerified)
	if got.Location != "https://ingest/files/"+it.ID || !got.VerifiedAt.Equal(clk.Now()) || got.LeaseOwner != "" {
		t.Fatalf("verified: %+v", got)
	}
	pend := map[string]OutboxEvent{}
	for _, sink := range []string{"file", "mqtt"} {
		evs, err := s.Pending(ctx, sink, 10)
		if err != nil || len(evs) != 1 {
			t.Fatalf("Pending(%s): %+v %v", sink, evs, err)
		}
		ev := evs[0]
		if ev.Type != EventVerified || ev.Sink != sink || ev.Item.State != StateVerified || ev.Item.SHA256 != item.SHA256 {
			t.Fatalf("Pending(%s): %+v", sink, ev)
		}
		pend[sink] = ev
	}
	if err := s.MarkPublished(ctx, pend["file"].Seq); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, item.ID, StateVerified)
	if _, err := os.Stat(s.ContentPath(item.ID)); err != nil {
		t.Fatalf("bytes gone before every sink had the event: %v", err)
	}
	if evs, _ := s.Pending(ctx, "file", 10); len(evs) != 0 {
		t.Fatalf("published event still pending: %+v", evs)
	}
	if err := s.MarkPublished(ctx, pend["mqtt"].Seq); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, item.ID, StateDone)
	if _, err := os.Stat(s.ContentPath(item.ID)); !os.IsNotExist(err) {
		t.Fatalf("bytes of a done item: %v", err)
	}
	if err := s.MarkPublished(ctx, pend["mqtt"].Seq); err != nil {
		t.Fatalf("MarkPublished twice: %v", err)
	}
	if err := s.MarkPublished(ctx, 9999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkPublished unknown: %v", err)
	}
	c, _ := s.Counts(ctx)
	if c.Bytes != 0 || c.ByState[StateDone] != 1 {
		t.Fatalf("counts: %+v", c)
	}

	// Replay: one event per item and type, whatever the sinks.
	s.Reject(ctx, Intake{Source: "lab"}, 1, "policy")
	evs, err := s.Events(ctx, start, time.Time{})
	if err != nil || len(evs) != 2 || evs[0].Type != EventVerified || evs[0].ItemID != item.ID ||
		evs[1].Type != EventRejected || evs[0].Item.State != StateDone {
		t.Fatalf("Events: %+v %v", evs, err)
	}
	if evs, _ := s.Events(ctx, start, clk.Now()); len(evs) != 0 {
		t.Fatalf("Events before the verification: %+v", evs)
	}
	if evs, _ := s.Events(ctx, clk.Now(), clk.Now().Add(time.Nanosecond)); len(evs) != 2 {
		t.Fatalf("Events at the verification: %+v", evs)
	}
}

func TestSweep(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now, KeepDone: time.Hour})
	done := receive(t, s, Intake{Source: "lab", Fingerprint: "fp-done"}, []byte("a"))
	finishItem(t, s, done.ID)
	dup := receive(t, s, Intake{Source: "lab"}, []byte("a"))
	rej, _ := s.Reject(ctx, Intake{Source: "lab"}, 1, "policy")
	waiting := receive(t, s, Intake{Source: "lab"}, []byte("b"))
	// The duplicate's event went out, the rejected one's did not.
	evs, _ := s.Pending(ctx, DefaultSink, 0)
	for _, ev := range evs {
		if ev.ItemID == dup.ID {
			s.MarkPublished(ctx, ev.Seq)
		}
	}
	if n, err := s.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("Sweep within keep_done: %d %v", n, err)
	}
	clk.Advance(2 * time.Hour)
	n, err := s.Sweep(ctx)
	if n != 2 || err != nil {
		t.Fatalf("Sweep: %d %v, want 2", n, err)
	}
	for _, id := range []string{done.ID, dup.ID} {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("swept item %s: %v", id, err)
		}
	}
	mustState(t, s, rej.ID, StateRejected) // its event is not out yet
	mustState(t, s, waiting.ID, StateReceived)
	// The fingerprint outlives the row: a kept file must not be taken again
	// (TestFingerprintsOutliveSweep; PruneFingerprints forgets files gone).
	if ok, _ := s.HasFingerprint(ctx, "lab", "fp-done"); !ok {
		t.Fatal("fingerprint of a swept item lost")
	}
	var rows int
	s.r.QueryRow(`SELECT COUNT(*) FROM outbox WHERE item_id IN (?, ?)`, done.ID, dup.ID).Scan(&rows)
	if rows != 0 {
		t.Fatalf("%d outbox rows of swept items", rows)
	}
}

func TestRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, Options{Dir: dir, Sinks: []string{"file", "mqtt"}})
	if err != nil {
		t.Fatal(err)
	}
	a := receive(t, s, Intake{Source: "lab"}, []byte("a"))
	b := receive(t, s, Intake{Source: "lab"}, []byte("b"))
	c := receive(t, s, Intake{Source: "lab"}, []byte("c"))
	dup := receive(t, s, Intake{Source: "lab"}, []byte("c"))
	// a: uploading, lease held by a worker that is about to die.
	la, _ := s.Lease(ctx, "dead-worker", time.Hour)
	s.SetUploadURL(ctx, la.ID, "dead-worker", "http://u/a")
	// b: verified, published to one sink only, then the sink is removed from the config.
	lb, _ := s.Lease(ctx, "w", time.Hour)
	s.MarkVerified(ctx, lb.ID, "w", "loc")
	evs, _ := s.Pending(ctx, "file", 0)
	for _, ev := range evs {
		if ev.ItemID == b.ID {
			s.MarkPublished(ctx, ev.Seq)
		}
	}
	// c: published but the process died before the bytes were removed.
	lc, _ := s.Lease(ctx, "w", time.Hour)
	s.MarkVerified(ctx, lc.ID, "w", "loc")
	s.w.Exec(`UPDATE items SET state = 'published' WHERE id = ?`, c.ID)
	if la.ID != a.ID || lb.ID != b.ID || lc.ID != c.ID {
		t.Fatalf("leased %s %s %s, want a b c in order", la.ID, lb.ID, lc.ID)
	}
	// d: stored with its description, but its row is gone (a crash between install and
	// commit, or rows lost with the WAL): it must be taken back, not deleted.
	d := receive(t, s, Intake{Source: "lab", Priority: PriorityLow}, []byte("d"))
	if _, err := s.w.Exec(`DELETE FROM items WHERE id = ?`, d.ID); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Leftovers of a crash: a half-written temp file, content without a row, and the
	// bytes of a duplicate that were not yet removed.
	os.WriteFile(filepath.Join(dir, "tmp", "0199-half"), []byte("half"), 0o600)
	orphan := filepath.Join(dir, "content", "zz", "0199-orphan")
	os.MkdirAll(filepath.Dir(orphan), 0o700)
	os.WriteFile(orphan, []byte("o"), 0o600)
	dupPath := filepath.Join(dir, "content", dup.ID[len(dup.ID)-2:], dup.ID)
	os.MkdirAll(filepath.Dir(dupPath), 0o700)
	os.WriteFile(dupPath, []byte("c"), 0o600)

	s = openTest(t, Options{Dir: dir, Sinks: []string{"file"}})
	if left := filesUnder(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files after recovery: %v", left)
	}
	for _, p := range []string{dupPath, s.ContentPath(b.ID), s.ContentPath(c.ID)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still there after recovery (%v)", p, err)
		}
	}
	// Content the database does not know and that has no description is never deleted.
	if b, err := os.ReadFile(orphan); err != nil || string(b) != "o" {
		t.Fatalf("undescribed content removed by recovery: %v", err)
	}
	back := mustState(t, s, d.ID, StateReceived)
	if back.SHA256 != d.SHA256 || back.Size != 1 || back.Priority != PriorityLow || !back.ReceivedAt.Equal(d.ReceivedAt) {
		t.Fatalf("taken back: %+v\nwant as received: %+v", back, d)
	}
	got := mustState(t, s, a.ID, StateUploading)
	if got.LeaseOwner != "" || got.UploadURL != "http://u/a" {
		t.Fatalf("leased item after recovery: %+v", got)
	}
	mustState(t, s, b.ID, StateDone)
	mustState(t, s, c.ID, StateDone)
	it, err := s.Lease(ctx, "new-worker", time.Hour)
	if err != nil || it.ID != a.ID || it.UploadURL != "http://u/a" {
		t.Fatalf("resume after recovery: %+v %v", it, err)
	}
	if _, err := s.OpenContent(a.ID); err != nil {
		t.Fatalf("content of the resumed item: %v", err)
	}
}

func TestReopenWithoutSinkListKeepsEvents(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, Options{Dir: dir, Sinks: []string{"file", "mqtt"}})
	if err != nil {
		t.Fatal(err)
	}
	item := receive(t, s, Intake{Source: "lab"}, []byte("x"))
	it, _ := s.Lease(ctx, "w", time.Hour)
	s.MarkVerified(ctx, it.ID, "w", "loc")
	s.Close()

	s = openTest(t, Options{Dir: dir})
	mustState(t, s, item.ID, StateVerified)
	for _, sink := range []string{"file", "mqtt"} {
		if evs, _ := s.Pending(ctx, sink, 0); len(evs) != 1 {
			t.Fatalf("Pending(%s) after reopen without Sinks: %d events, want 1", sink, len(evs))
		}
	}
}
