package events

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgecourier/courier/spool"
)

// Outbox is the spool surface the publisher needs.
type Outbox interface {
	Pending(ctx context.Context, sink string, limit int) ([]spool.OutboxEvent, error)
	MarkPublished(ctx context.Context, seq int64) error
	// MarkPublishedBatch marks many in one transaction (group commit).
	MarkPublishedBatch(ctx context.Context, seqs []int64) error
}

// Publisher drains the outbox into its sinks, one loop per sink, oldest first,
// so events of one item stay in order. A sink that fails is retried with backoff;
// the other sinks go on.
type Publisher struct {
	Outbox  Outbox
	Sinks   []Sink
	Options Options
	Logger  *slog.Logger
	// Poll is how often an idle loop looks for new events (default 200ms).
	Poll time.Duration
	// Kick, when non-nil, wakes the loops early (e.g. right after a verification).
	Kick <-chan struct{}
}

// Run publishes until ctx is done.
func (p *Publisher) Run(ctx context.Context) error {
	p.Logger = cmp.Or(p.Logger, slog.New(slog.DiscardHandler)) // nil Logger must not panic
	g, ctx := errgroup.WithContext(ctx)
	kicks := make([]chan struct{}, len(p.Sinks))
	for i := range kicks {
		kicks[i] = make(chan struct{}, 1)
	}
	if p.Kick != nil {
		g.Go(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-p.Kick:
					for _, k := range kicks {
						select {
						case k <- struct{}{}:
						default:
						}
					}
				}
			}
		})
	}
	for i, s := range p.Sinks {
		g.Go(func() error { p.loop(ctx, s, kicks[i]); return nil })
	}
	return g.Wait()
}

func (p *Publisher) loop(ctx context.Context, s Sink, kick <-chan struct{}) {
	poll := p.Poll
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	backoff := time.Duration(0)
	for {
		n, err := p.drain(ctx, s)
		if ctx.Err() != nil {
			return
		}
		wait := poll
		if err != nil {
			backoff = min(max(2*backoff, time.Second), time.Minute)
			wait = backoff
			p.Logger.Warn("publishing events failed; will retry", "sink", s.Name(), "retry_in", wait, "err", err)
		} else {
			backoff = 0
			if n > 0 {
				continue
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// drain publishes one batch; it returns how many were published.
func (p *Publisher) drain(ctx context.Context, s Sink) (int, error) {
	evs, err := p.Outbox.Pending(ctx, s.Name(), 256)
	if err != nil {
		return 0, err
	}
	if bs, ok := s.(BatchSink); ok && len(evs) > 1 {
		return p.drainBatch(ctx, bs, evs)
	}
	// Published events are marked together, in one transaction, once the batch ends
	// or a publish fails (an event published but not marked is published again after
	// a crash: at least once, as before).
	done := make([]int64, 0, len(evs))
	mark := func(n int, err error) (int, error) {
		if merr := p.Outbox.MarkPublishedBatch(ctx, done); merr != nil && !errors.Is(merr, context.Canceled) {
			return 0, merr
		}
		return n, err
	}
	for i, ev := range evs {
		payload, err := Marshal(ev.Item, ev.Type, p.Options)
		if err != nil {
			return mark(i, err)
		}
		id := ID(ev.ItemID, ev.Type)
		if err := s.Publish(ctx, id, payload); err != nil {
			return mark(i, err)
		}
		done = append(done, ev.Seq)
	}
	return mark(len(evs), nil)
}

func (p *Publisher) drainBatch(ctx context.Context, s BatchSink, evs []spool.OutboxEvent) (int, error) {
	ids := make([]string, len(evs))
	payloads := make([][]byte, len(evs))
	for i, ev := range evs {
		b, err := Marshal(ev.Item, ev.Type, p.Options)
		if err != nil {
			return 0, err
		}
		ids[i], payloads[i] = ID(ev.ItemID, ev.Type), b
	}
	errs := s.PublishBatch(ctx, ids, payloads)
	var first error
	done := make([]int64, 0, len(evs))
	for i, err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		done = append(done, evs[i].Seq)
	}
	if err := p.Outbox.MarkPublishedBatch(ctx, done); err != nil {
		return 0, err
	}
	return len(done), first
}
