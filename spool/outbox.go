package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
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
// Marking a row twice is harmless; an unknown seq is ErrNotFound. A publisher with
// several events at hand should use MarkPublishedBatch.
func (s *Spool) MarkPublished(ctx context.Context, seq int64) error {
	found, err := s.markPublished(ctx, []int64{seq})
	if err == nil && found == 0 {
		err = fmt.Errorf("spool %s: mark event %d published: %w", s.dir, seq, ErrNotFound)
	}
	return err
}

// MarkPublishedBatch is MarkPublished for many outbox rows in one transaction (group
// commit), plus one more for the items it finishes. Seqs that no longer exist (swept)
// are skipped. The audit actor is publisher unless ctx says otherwise.
func (s *Spool) MarkPublishedBatch(ctx context.Context, seqs []int64) error {
	_, err := s.markPublished(ctx, seqs)
	return err
}

func (s *Spool) markPublished(ctx context.Context, seqs []int64) (int, error) {
	if len(seqs) == 0 {
		return 0, nil
	}
	now := s.nowUTC()
	actor := actorOf(ctx, ActorPublisher)
	var (
		finish []string
		found  int
	)
	err := s.write(ctx, "publish", func(tx *sql.Tx) error {
		finish, found = finish[:0], 0
		var candidates []string
		seen := map[string]bool{}
		for start := 0; start < len(seqs); start += 500 {
			chunk := seqs[start:min(start+500, len(seqs))]
			in, args := inList(chunk)
			rows, err := tx.QueryContext(ctx, `SELECT item_id, type FROM outbox WHERE seq IN (`+in+`)`, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var itemID, typ string
				if err := rows.Scan(&itemID, &typ); err != nil {
					rows.Close()
					return err
				}
				found++
				if typ == EventVerified && !seen[itemID] {
					seen[itemID] = true
					candidates = append(candidates, itemID)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET published_at = ? WHERE published_at = 0 AND seq IN (`+in+`)`,
				append([]any{nanos(now)}, args...)...); err != nil {
				return err
			}
		}
		al := newAuditLog(tx)
		for _, id := range candidates {
			// Published once every sink has the verified event.
			var digest string
			err := tx.QueryRowContext(ctx, `UPDATE items SET state = 'published', updated_at = ?
				WHERE id = ? AND state = 'verified' AND NOT EXISTS (SELECT 1 FROM outbox o
					WHERE o.item_id = items.id AND o.type = ? AND o.published_at = 0)
				RETURNING sha256`, nanos(now), id, EventVerified).Scan(&digest)
			if errors.Is(err, sql.ErrNoRows) {
				continue // events left, or already published (recovery or Sweep finishes it)
			}
			if err != nil {
				return err
			}
			if err := al.add(ctx, id, StateVerified, StatePublished, now, digest, actor); err != nil {
				return err
			}
			finish = append(finish, id)
		}
		return nil
	})
	if err != nil {
		if len(seqs) == 1 {
			return 0, fmt.Errorf("spool %s: mark event %d published: %w", s.dir, seqs[0], err)
		}
		return 0, fmt.Errorf("spool %s: mark %d events published: %w", s.dir, len(seqs), err)
	}
	return found, s.finish(WithActor(ctx, actor), finish...)
}

// finish removes published items' bytes and marks them done, in one transaction.
// Crash-safe in either order of events: recovery calls it again for items still
// published.
func (s *Spool) finish(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	removed := ids[:0:0]
	var first error
	for _, id := range ids {
		if err := s.removeContent(id); err != nil {
			// On Windows a file still open elsewhere cannot be deleted; Sweep tries again.
			if first == nil {
				first = fmt.Errorf("spool %s: remove content of item %s: %w", s.dir, id, err)
			}
			continue
		}
		removed = append(removed, id)
	}
	now := s.nowUTC()
	actor := actorOf(ctx, ActorPublisher)
	err := s.write(ctx, "finish", func(tx *sql.Tx) error {
		al := newAuditLog(tx)
		for _, id := range removed {
			var digest string
			err := tx.QueryRowContext(ctx, `UPDATE items SET state = 'done', stored = 0, updated_at = ?
				WHERE id = ? AND state = 'published' RETURNING sha256`, nanos(now), id).Scan(&digest)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if err := al.add(ctx, id, StatePublished, StateDone, now, digest, actor); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool %s: finish %d items: %w", s.dir, len(removed), err)
	}
	for _, id := range removed {
		s.log.Debug("spool: done", "id", id)
	}
	return first
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

// inList is "?, ?, ?" for n values, and the values as arguments.
func inList(vals []int64) (string, []any) {
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return strings.Repeat("?, ", len(vals)-1) + "?", args
}
