package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Pending returns up to limit unpublished outbox events for sink, oldest first
// (limit <= 0: all).
func (s *Spool) Pending(ctx context.Context, sink string, limit int) ([]OutboxEvent, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+itemColsI+`, o.seq, o.type, o.sink, o.created_at
		FROM outbox o JOIN items i ON i.id = o.item_id
		WHERE o.sink = ? AND o.published_at = 0 ORDER BY o.seq LIMIT ?`, sink, limit)
	if err != nil {
		return nil, fmt.Errorf("spool %s: pending events for %s: %w", s.dir, sink, err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("spool %s: pending events for %s: %w", s.dir, sink, err)
	}
	return evs, nil
}

func scanEvents(rows *sql.Rows) ([]OutboxEvent, error) {
	defer rows.Close()
	var evs []OutboxEvent
	for rows.Next() {
		var (
			ev      OutboxEvent
			created int64
		)
		it, err := scanItem(rows, &ev.Seq, &ev.Type, &ev.Sink, &created)
		if err != nil {
			return nil, err
		}
		ev.ItemID, ev.Item, ev.CreatedAt = it.ID, it, fromNanos(created)
		evs = append(evs, ev)
	}
	return evs, rows.Err()
}

// MarkPublished marks one outbox row published. When all rows of an item's verified
// event are published the item becomes published, its bytes are removed, then done.
// Marking a row twice is harmless.
func (s *Spool) MarkPublished(ctx context.Context, seq int64) error {
	var (
		itemID, typ string
		finish      bool
	)
	now := nanos(s.nowUTC())
	err := s.write(ctx, "publish", func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT item_id, type FROM outbox WHERE seq = ?`, seq).Scan(&itemID, &typ)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE outbox SET published_at = ? WHERE seq = ? AND published_at = 0`,
			now, seq); err != nil {
			return err
		}
		if typ != EventVerified {
			return nil
		}
		var left int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE item_id = ? AND type = ?
			AND published_at = 0`, itemID, typ).Scan(&left); err != nil {
			return err
		}
		if left > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE items SET state = 'published', updated_at = ?
			WHERE id = ? AND state = 'verified'`, now, itemID); err != nil {
			return err
		}
		var st string
		if err := tx.QueryRowContext(ctx, `SELECT state FROM items WHERE id = ?`, itemID).Scan(&st); err != nil {
			return err
		}
		finish = st == string(StatePublished)
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool %s: mark event %d published: %w", s.dir, seq, err)
	}
	if finish {
		return s.finish(ctx, itemID)
	}
	return nil
}

// finish removes a published item's bytes and marks it done. Crash-safe in either
// order of events: recovery calls it again for items still published.
func (s *Spool) finish(ctx context.Context, id string) error {
	if err := s.removeContent(id); err != nil {
		return fmt.Errorf("spool %s: remove content of item %s: %w", s.dir, id, err)
	}
	err := s.write(ctx, "finish", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE items SET state = 'done', stored = 0, updated_at = ?
			WHERE id = ? AND state = 'published'`, nanos(s.nowUTC()), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("spool %s: finish item %s: %w", s.dir, id, err)
	}
	s.log.Debug("spool: done", "id", id)
	return nil
}

// Events returns the outbox events (one per item and type, any sink) created in
// [since, until), oldest first, for `courier events replay`. A zero until means no
// upper bound. Events older than keep_done may have been swept with their items.
func (s *Spool) Events(ctx context.Context, since, until time.Time) ([]OutboxEvent, error) {
	hi := int64(1<<63 - 1)
	if !until.IsZero() {
		hi = nanos(until)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+itemColsI+`, MIN(o.seq), o.type, '', MIN(o.created_at)
		FROM outbox o JOIN items i ON i.id = o.item_id
		WHERE o.created_at >= ? AND o.created_at < ?
		GROUP BY o.item_id, o.type ORDER BY MIN(o.seq)`, nanos(since), hi)
	if err != nil {
		return nil, fmt.Errorf("spool %s: events: %w", s.dir, err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("spool %s: events: %w", s.dir, err)
	}
	return evs, nil
}
