package spool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentReceivesCommit: many intakes at once (committed in shared
// transactions) all return their committed item, and dedupe decides inside a batch as
// it does one by one: of three concurrent intakes of the same bytes exactly one is
// received and the others are its duplicates.
func TestConcurrentReceivesCommit(t *testing.T) {
	s := openTest(t, Options{Sinks: []string{"file"}})
	ctx := context.Background()
	const distinct, copies = 16, 3
	type result struct {
		it  *Item
		err error
		n   int
	}
	results := make(chan result, distinct*copies)
	var wg sync.WaitGroup
	for i := range distinct * copies {
		wg.Go(func() {
			n := i % distinct
			data := bytes.Repeat([]byte(fmt.Sprintf("item %d;", n)), 512)
			var it *Item
			var err error
			if i%2 == 0 {
				it, err = s.Receive(ctx, Intake{Source: "lab"}, bytes.NewReader(data))
			} else {
				p := filepath.Join(t.TempDir(), "f")
				if err = os.WriteFile(p, data, 0o600); err == nil {
					it, err = s.ReceiveFile(ctx, Intake{Source: "lab"}, p)
				}
			}
			results <- result{it, err, n}
		})
	}
	wg.Wait()
	close(results)
	received := map[int]string{}
	dups := map[int][]*Item{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("receive %d: %v", r.n, r.err)
		}
		want := sha256.Sum256(bytes.Repeat([]byte(fmt.Sprintf("item %d;", r.n)), 512))
		if r.it.SHA256 != hex.EncodeToString(want[:]) {
			t.Fatalf("receive %d: digest %s", r.n, r.it.SHA256)
		}
		switch r.it.State {
		case StateReceived:
			if received[r.n] != "" {
				t.Fatalf("content %d received twice (%s, %s)", r.n, received[r.n], r.it.ID)
			}
			received[r.n] = r.it.ID
		case StateDuplicate:
			dups[r.n] = append(dups[r.n], r.it)
		default:
			t.Fatalf("receive %d: state %s", r.n, r.it.State)
		}
	}
	for n := range distinct {
		if received[n] == "" || len(dups[n]) != copies-1 {
			t.Fatalf("content %d: received %q, %d duplicates; want one and %d", n, received[n], len(dups[n]), copies-1)
		}
		for _, d := range dups[n] {
			if d.DuplicateOf != received[n] {
				t.Fatalf("duplicate %s of %q, want of %s", d.ID, d.DuplicateOf, received[n])
			}
		}
	}
	// Every item returned is committed: the rows are there, bytes and descriptions of
	// the received ones are in content/, each duplicate has its event.
	items, err := s.List(ctx, ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != distinct*copies {
		t.Fatalf("%d rows, want %d", len(items), distinct*copies)
	}
	for _, id := range received {
		if _, err := os.Stat(s.ContentPath(id)); err != nil {
			t.Fatalf("received item %s: %v", id, err)
		}
	}
	if files := filesUnder(t, filepath.Join(s.dir, "content")); len(files) != 2*distinct {
		t.Fatalf("%d content files, want %d (bytes and description of each received item)", len(files), 2*distinct)
	}
	evs, err := s.Pending(ctx, "file", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != distinct*(copies-1) {
		t.Fatalf("%d outbox events, want %d duplicate events", len(evs), distinct*(copies-1))
	}
}
