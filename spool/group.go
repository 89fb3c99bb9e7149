package spool

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// Group commit: concurrent intakes stage, describe and install their bytes in their
// own goroutines (write, fsync, rename), then queue their row. Whoever finds no
// commit under way leads: it fsyncs the content folders of everything queued once and
// commits all their rows in ONE transaction (each row in its own savepoint, so one
// bad row fails alone), then hands the lead to the first caller that queued meanwhile.
// No goroutine is started: the callers do the work. A caller returns only after the
// transaction holding its row committed (or failed): nothing is released early.

// pendingRow is one intake waiting for its row to be committed.
type pendingRow struct {
	ctx   context.Context // the caller's, without its cancellation (the row is already on its way)
	dir   string          // content folder to fsync before the commit
	fn    func(ctx context.Context, tx *sql.Tx) error
	err   error
	lead  bool
	ready chan struct{} // closed (or sent on, to lead) when err is set or the lead is handed over
}

type grouper struct {
	mu      sync.Mutex
	queue   []*pendingRow
	leading bool
}

// commitGrouped commits fn's writes together with whatever else is queued. It makes
// dir durable first (the renames into it must be before the row).
func (s *Spool) commitGrouped(ctx context.Context, dir string, fn func(ctx context.Context, tx *sql.Tx) error) error {
	p := &pendingRow{ctx: context.WithoutCancel(ctx), dir: dir, fn: fn, ready: make(chan struct{}, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.leading {
		g.mu.Unlock()
		<-p.ready
		if !p.lead {
			return p.err
		}
	} else {
		g.leading = true
		g.mu.Unlock()
	}
	// Leading: commit one batch (it holds p), then pass the lead on.
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	s.commitBatch(batch)
	g.mu.Lock()
	if len(g.queue) > 0 {
		next := g.queue[0]
		next.lead = true
		next.ready <- struct{}{}
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	for _, q := range batch {
		if q != p {
			q.ready <- struct{}{}
		}
	}
	return p.err
}

// writeGrouped is write with group commit: fn runs in a savepoint of a transaction
// shared with concurrent writers (uploader workers leasing and marking items), so its
// effect and its error are exactly those of a transaction of its own. fn must use the
// ctx it is given (never cancelled: interrupting a statement would roll back the whole
// shared transaction).
func (s *Spool) writeGrouped(ctx context.Context, what string, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.w == nil {
		return fmt.Errorf("%s: %w", what, ErrReadOnly)
	}
	return s.commitGrouped(ctx, "", fn)
}

// commitBatch fsyncs the batch's folders once each and commits its rows in one
// transaction, setting every row's err.
func (s *Spool) commitBatch(batch []*pendingRow) {
	fail := func(err error) {
		for _, q := range batch {
			if q.err == nil {
				q.err = err
			}
		}
	}
	synced := map[string]bool{"": true}
	for _, q := range batch {
		if synced[q.dir] {
			continue
		}
		synced[q.dir] = true
		if err := syncDir(q.dir); err != nil {
			fail(fmt.Errorf("fsync content folder: %w", err))
			return
		}
	}
	ctx := batch[0].ctx
	err := s.write(ctx, "commit", func(tx *sql.Tx) error {
		if len(batch) == 1 {
			batch[0].err = batch[0].fn(batch[0].ctx, tx)
			return batch[0].err
		}
		for _, q := range batch {
			if _, err := tx.ExecContext(ctx, `SAVEPOINT intake`); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			if q.err = q.fn(q.ctx, tx); q.err != nil {
				if _, err := tx.ExecContext(ctx, `ROLLBACK TO intake`); err != nil {
					return fmt.Errorf("rollback to savepoint: %w", err)
				}
			}
			if _, err := tx.ExecContext(ctx, `RELEASE intake`); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		fail(err)
	}
}
