package spool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// lifecycle takes an item from intake to done and returns it.
func lifecycle(t *testing.T, s *Spool, data string) *Item {
	t.Helper()
	it := receive(t, s, Intake{Source: "lab"}, []byte(data))
	finishItem(t, s, it.ID)
	return it
}

func auditRows(t *testing.T, s *Spool) []AuditRecord {
	t.Helper()
	var out []AuditRecord
	if err := s.AuditRecords(context.Background(), time.Time{}, time.Time{}, func(r AuditRecord) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAuditRecordsEveryStateChange(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	it := lifecycle(t, s, "a")
	q := receive(t, s, Intake{Source: "lab"}, []byte("q"))
	l, _ := s.Lease(ctx, "w", time.Hour)
	s.Quarantine(ctx, l.ID, "w", "460 checksum mismatch")
	if err := s.Retry(WithActor(ctx, "config:v42"), q.ID); err != nil {
		t.Fatal(err)
	}
	type change struct {
		id       string
		from, to State
		actor    string
	}
	want := []change{
		{it.ID, "", StateReceived, "source:lab"},
		{it.ID, StateReceived, StateUploading, ActorUploader},
		{it.ID, StateUploading, StateVerified, ActorUploader},
		{it.ID, StateVerified, StatePublished, ActorPublisher},
		{it.ID, StatePublished, StateDone, ActorPublisher},
		{q.ID, "", StateReceived, "source:lab"},
		{q.ID, StateReceived, StateUploading, ActorUploader},
		{q.ID, StateUploading, StateQuarantined, ActorUploader},
		{q.ID, StateQuarantined, StateReceived, "config:v42"},
	}
	rows := auditRows(t, s)
	if len(rows) != len(want) {
		t.Fatalf("%d audit rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, r := range rows {
		w := want[i]
		if r.ItemID != w.id || r.From != w.from || r.To != w.to || r.Actor != w.actor || r.Seq != int64(i+1) {
			t.Fatalf("row %d: %+v, want %+v", i, r, w)
		}
		if r.SHA256 == "" {
			t.Fatalf("row %d has no digest", i)
		}
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != len(want) {
		t.Fatalf("VerifyAudit: %d, %v", n, err)
	}
}

func TestAuditIsAppendOnly(t *testing.T) {
	s := openTest(t, Options{})
	lifecycle(t, s, "a")
	if _, err := s.w.Exec(`UPDATE audit SET actor = 'someone' WHERE seq = 2`); err == nil {
		t.Fatal("UPDATE of an audit row was allowed")
	}
	if _, err := s.w.Exec(`DELETE FROM audit WHERE seq = 2`); err == nil {
		t.Fatal("DELETE of a fresh audit row was allowed")
	}
}

// TestAuditTamperingIsNamed edits rows the way someone with the database file would
// (triggers dropped) and checks that verify names the first row that does not hold.
func TestAuditTamperingIsNamed(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		tamper  []string
		wantSeq int64
	}{
		{"row edited", []string{`UPDATE audit SET to_state = 'done' WHERE seq = 3`}, 3},
		{"row edited and rehashed", []string{`UPDATE audit SET actor = 'cli', hash = 'beef' WHERE seq = 3`}, 3},
		{"row removed", []string{`DELETE FROM audit WHERE seq = 4`}, 5},
		{"row inserted", []string{`INSERT INTO audit SELECT 100, item_id, from_state, to_state, at, sha256, actor, prev_hash, hash FROM audit WHERE seq = 2`,
			`DELETE FROM audit WHERE seq > 2 AND seq < 100`}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, Options{})
			lifecycle(t, s, "a")
			lifecycle(t, s, "b")
			for _, q := range append([]string{`DROP TRIGGER audit_append_only`, `DROP TRIGGER audit_keep`}, tc.tamper...) {
				if _, err := s.w.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			_, err := s.VerifyAudit(ctx)
			var ae *AuditError
			if !errors.As(err, &ae) || !errors.Is(err, ErrAuditBroken) || ae.Seq != tc.wantSeq {
				t.Fatalf("VerifyAudit: %v, want row %d named", err, tc.wantSeq)
			}
		})
	}
}

func TestAuditRetentionKeepsTheChain(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now, KeepDone: time.Hour, KeepAudit: 48 * time.Hour})
	lifecycle(t, s, "old")
	clk.Advance(72 * time.Hour)
	fresh := lifecycle(t, s, "fresh")
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	rows := auditRows(t, s)
	if len(rows) != 5 || rows[0].ItemID != fresh.ID || rows[0].Seq != 6 {
		t.Fatalf("after the sweep: %+v, want the 5 rows of the fresh item", rows)
	}
	lifecycle(t, s, "later")
	if n, err := s.VerifyAudit(ctx); err != nil || n != 10 {
		t.Fatalf("VerifyAudit after the sweep: %d, %v", n, err)
	}
	// The anchor is what links the first remaining row: changing it shows.
	s.w.Exec(`UPDATE audit_anchor SET hash = 'x'`)
	var ae *AuditError
	if _, err := s.VerifyAudit(ctx); !errors.As(err, &ae) || ae.Seq != 6 {
		t.Fatalf("VerifyAudit with a changed anchor: %v, want row 6 named", err)
	}
}
