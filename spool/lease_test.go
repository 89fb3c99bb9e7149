package spool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestLeaseNeverShared(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	const n = 120
	for i := 0; i < n; i++ {
		receive(t, s, Intake{Source: "lab"}, []byte(fmt.Sprint("item ", i)))
	}
	var (
		mu     sync.Mutex
		leased = map[string]string{}
		wg     sync.WaitGroup
		errs   = make(chan error, 4)
	)
	for w := 0; w < 4; w++ {
		owner := fmt.Sprint("worker-", w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				it, err := s.Lease(ctx, owner, time.Hour)
				if errors.Is(err, ErrEmpty) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				prev, dup := leased[it.ID]
				leased[it.ID] = owner
				mu.Unlock()
				if dup {
					errs <- fmt.Errorf("item %s leased by %s and %s", it.ID, prev, owner)
					return
				}
				if it.State != StateUploading || it.LeaseOwner != owner {
					errs <- fmt.Errorf("leased item: %+v", it)
					return
				}
				if err := s.SetUploadURL(ctx, it.ID, owner, "http://u/"+it.ID); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(leased) != n {
		t.Fatalf("%d items leased, want %d", len(leased), n)
	}
	c, _ := s.Counts(ctx)
	if c.ByState[StateUploading] != n {
		t.Fatalf("uploading = %d", c.ByState[StateUploading])
	}
}

func TestLeasePriority(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now})
	var order []string
	add := func(p Priority, name string) *Item {
		clk.Advance(time.Second)
		return receive(t, s, Intake{Source: "lab", Priority: p}, []byte(name))
	}
	low := add(PriorityLow, "low")
	n1 := add(PriorityNormal, "n1")
	n2 := add(PriorityNormal, "n2")
	// A waiting normal item that is due is still behind a new high one.
	it, _ := s.Lease(ctx, "w", time.Hour)
	if it.ID != n1.ID {
		t.Fatalf("first lease %s, want n1", it.ID)
	}
	if err := s.MarkWaiting(ctx, n1.ID, "w", clk.Now(), "timeout", false); err != nil {
		t.Fatal(err)
	}
	high := add(PriorityHigh, "high")
	for {
		it, err := s.Lease(ctx, "w", time.Hour)
		if errors.Is(err, ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, it.ID)
	}
	want := []string{high.ID, n1.ID, n2.ID, low.ID}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("lease order %v, want %v (high, n1, n2, low)", order, want)
	}
}

func TestLeaseExpiryAndLeaseLost(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now})
	item := receive(t, s, Intake{Source: "lab"}, []byte("x"))
	a, err := s.Lease(ctx, "a", time.Minute)
	if err != nil || a.ID != item.ID || a.Tries != 1 {
		t.Fatalf("Lease a: %+v %v", a, err)
	}
	if err := s.SetUploadURL(ctx, item.ID, "a", "http://u/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lease(ctx, "b", time.Minute); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Lease while held: %v, want ErrEmpty", err)
	}
	clk.Advance(30 * time.Second)
	if err := s.Renew(ctx, item.ID, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	clk.Advance(45 * time.Second) // 75s after leasing: alive thanks to the renewal
	if _, err := s.Lease(ctx, "b", time.Minute); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Lease of a renewed item: %v, want ErrEmpty", err)
	}
	clk.Advance(time.Minute)
	b, err := s.Lease(ctx, "b", time.Minute)
	if err != nil || b.ID != item.ID || b.UploadURL != "http://u/1" || b.Tries != 2 {
		t.Fatalf("Lease after expiry: %+v %v", b, err)
	}
	for name, f := range map[string]func() error{
		"Renew":        func() error { return s.Renew(ctx, item.ID, "a", time.Minute) },
		"Release":      func() error { return s.Release(ctx, item.ID, "a") },
		"SetUploadURL": func() error { return s.SetUploadURL(ctx, item.ID, "a", "") },
		"MarkVerified": func() error { return s.MarkVerified(ctx, item.ID, "a", "loc") },
		"MarkWaiting":  func() error { return s.MarkWaiting(ctx, item.ID, "a", clk.Now(), "x", true) },
		"Quarantine":   func() error { return s.Quarantine(ctx, item.ID, "a", "x") },
	} {
		if err := f(); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("%s by the old owner: %v, want ErrLeaseLost", name, err)
		}
	}
	if err := s.Renew(ctx, "unknown", "a", time.Minute); !errors.Is(err, ErrNotFound) {
		t.Errorf("Renew unknown: %v", err)
	}
	// Release keeps the state and the URL and makes it leasable at once.
	if err := s.Release(ctx, item.ID, "b"); err != nil {
		t.Fatal(err)
	}
	got := mustState(t, s, item.ID, StateUploading)
	if got.LeaseOwner != "" || got.UploadURL != "http://u/1" {
		t.Fatalf("after Release: %+v", got)
	}
	if c, err := s.Lease(ctx, "c", time.Minute); err != nil || c.ID != item.ID {
		t.Fatalf("Lease after Release: %v", err)
	}
}

func TestWaitingRetryQuarantine(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now})
	drain := func() {
		select {
		case <-s.Ready():
		default:
		}
	}
	drain()
	item := receive(t, s, Intake{Source: "lab"}, []byte("x"))
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled by intake")
	}
	it, _ := s.Lease(ctx, "w", time.Minute)
	s.SetUploadURL(ctx, it.ID, "w", "http://u/x")
	next := clk.Now().Add(time.Minute)
	if err := s.MarkWaiting(ctx, it.ID, "w", next, "http 503", true); err != nil {
		t.Fatal(err)
	}
	got := mustState(t, s, item.ID, StateWaiting)
	if got.Attempts != 1 || got.LastError != "http 503" || !got.NextAttempt.Equal(next) {
		t.Fatalf("waiting: %+v", got)
	}
	if due, _ := s.NextDue(ctx); !due.Equal(next) {
		t.Fatalf("NextDue %v, want %v", due, next)
	}
	if _, err := s.Lease(ctx, "w", time.Minute); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Lease before next attempt: %v", err)
	}
	clk.Advance(time.Minute)
	it, err := s.Lease(ctx, "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Not counted: a link failure.
	s.MarkWaiting(ctx, it.ID, "w", clk.Now(), "dial tcp: refused", false)
	if got := mustState(t, s, item.ID, StateWaiting); got.Attempts != 1 {
		t.Fatalf("uncounted failure changed attempts to %d", got.Attempts)
	}
	it, _ = s.Lease(ctx, "w", time.Minute)
	if err := s.Quarantine(ctx, it.ID, "w", "http 413"); err != nil {
		t.Fatal(err)
	}
	got = mustState(t, s, item.ID, StateQuarantined)
	if got.Reason != "http 413" {
		t.Fatalf("reason %q", got.Reason)
	}
	if _, err := s.OpenContent(item.ID); err != nil {
		t.Fatalf("quarantined bytes gone: %v", err)
	}
	evs, _ := s.Pending(ctx, DefaultSink, 0)
	if len(evs) != 1 || evs[0].Type != EventQuarantined {
		t.Fatalf("quarantine event: %+v", evs)
	}
	if due, _ := s.NextDue(ctx); !due.IsZero() {
		t.Fatalf("NextDue with nothing waiting: %v", due)
	}

	drain()
	if err := s.Retry(ctx, item.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled by Retry")
	}
	got = mustState(t, s, item.ID, StateReceived)
	if got.Attempts != 0 || got.UploadURL != "http://u/x" || got.Reason != "" {
		t.Fatalf("after Retry: %+v", got)
	}
	if err := s.Retry(ctx, item.ID); !errors.Is(err, ErrNotRetryable) {
		t.Fatalf("Retry of a received item: %v", err)
	}
	if err := s.Retry(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Retry unknown: %v", err)
	}
	if _, err := s.RetryState(ctx, StateDone); !errors.Is(err, ErrNotRetryable) {
		t.Fatalf("RetryState done: %v", err)
	}
	it, _ = s.Lease(ctx, "w", time.Minute)
	s.MarkWaiting(ctx, it.ID, "w", clk.Now().Add(time.Hour), "x", false)
	if n, err := s.RetryState(ctx, StateWaiting); n != 1 || err != nil {
		t.Fatalf("RetryState waiting: %d %v", n, err)
	}
	if _, err := s.Lease(ctx, "w", time.Minute); err != nil {
		t.Fatalf("Lease after RetryState: %v", err)
	}
}
