package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Get returns one item. ErrNotFound if unknown.
func (s *Spool) Get(ctx context.Context, id string) (*Item, error) {
	it, err := scanItem(s.r.QueryRowContext(ctx, `SELECT `+itemCols+` FROM items WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("spool %s: item %s: %w", s.dir, id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("spool %s: item %s: %w", s.dir, id, err)
	}
	return it, nil
}

// List returns items, newest first.
func (s *Spool) List(ctx context.Context, f ListFilter) ([]*Item, error) {
	q, args := `SELECT `+itemCols+` FROM items`, []any{}
	if f.State != "" {
		q += ` WHERE state = ?`
		args = append(args, string(f.State))
	}
	q += ` ORDER BY received_at DESC, id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("spool %s: list: %w", s.dir, err)
	}
	defer rows.Close()
	var items []*Item
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("spool %s: list: %w", s.dir, err)
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("spool %s: list: %w", s.dir, err)
	}
	return items, nil
}

// Counts returns items per state (every state present, zero or not), the oldest item
// not yet uploaded and the spooled bytes.
func (s *Spool) Counts(ctx context.Context) (Counts, error) {
	c := Counts{ByState: make(map[State]int, len(AllStates))}
	for _, st := range AllStates {
		c.ByState[st] = 0
	}
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM items GROUP BY state`)
	if err != nil {
		return c, fmt.Errorf("spool %s: counts: %w", s.dir, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			st string
			n  int
		)
		if err := rows.Scan(&st, &n); err != nil {
			return c, fmt.Errorf("spool %s: counts: %w", s.dir, err)
		}
		c.ByState[State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("spool %s: counts: %w", s.dir, err)
	}
	var oldest sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MIN(received_at) FROM items
		WHERE state IN ('received', 'uploading', 'waiting')`).Scan(&oldest); err != nil {
		return c, fmt.Errorf("spool %s: counts: %w", s.dir, err)
	}
	if oldest.Valid {
		c.OldestWaiting = fromNanos(oldest.Int64)
	}
	c.Bytes, err = s.SpooledBytes(ctx)
	return c, err
}

// Sweep deletes finished rows (done, rejected, duplicate) older than keep_done, with
// their outbox rows (fingerprints go by PruneFingerprints), and audit rows older than
// keep_audit. A row with an event not yet published stays.
// It also finishes published items whose bytes could not be removed earlier (on
// Windows a file still open elsewhere cannot be deleted). Call it now and then.
func (s *Spool) Sweep(ctx context.Context) (int, error) {
	if err := s.finishPublished(ctx); err != nil {
		return 0, err
	}
	cutoff := nanos(s.nowUTC().Add(-s.opts.KeepDone))
	var n int64
	err := s.write(ctx, "sweep", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM items
			WHERE state IN ('done', 'rejected', 'duplicate') AND updated_at < ?
			AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.item_id = items.id AND o.published_at = 0)`,
			cutoff)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("spool %s: sweep: %w", s.dir, err)
	}
	if n > 0 {
		s.log.Info("spool: swept finished items", "count", n)
	}
	a, err := s.sweepAudit(ctx)
	if err != nil {
		return int(n), err
	}
	if a > 0 {
		s.log.Info("spool: swept audit rows older than keep_audit", "count", a)
	}
	return int(n), nil
}
