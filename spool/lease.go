package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Lease hands the next item to upload to owner for ttl: received, waiting whose
// next attempt is due, or uploading whose lease expired; highest priority first,
// then oldest. ErrEmpty if none. The item is uploading when it is returned; its
// UploadURL, if any, is the upload to resume.
func (s *Spool) Lease(ctx context.Context, owner string, ttl time.Duration) (*Item, error) {
	now := s.nowUTC()
	n := nanos(now)
	var it *Item
	// One IMMEDIATE transaction: no other writer, in this process or another, can pick
	// the same row between the SELECT and the UPDATE.
	err := s.writeGrouped(ctx, "lease", func(ctx context.Context, tx *sql.Tx) error {
		var err error
		// items_leasable walks the backlog in lease order and stops at the first match,
		// instead of sorting every waiting item on each lease.
		it, err = scanItem(tx.QueryRowContext(ctx, `SELECT `+itemCols+` FROM items INDEXED BY items_leasable
			WHERE state IN ('received', 'waiting', 'uploading')
			AND (state = 'received'
				OR (state = 'waiting' AND next_attempt <= ?)
				OR (state = 'uploading' AND lease_until <= ?))
			AND NOT EXISTS (SELECT 1 FROM parts_pending p WHERE p.item_id = items.id)
			ORDER BY priority, received_at, id LIMIT 1`, n, n))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrEmpty
		}
		if err != nil {
			return err
		}
		from := it.State
		it.State = StateUploading
		it.LeaseOwner = owner
		it.LeaseUntil = now.Add(ttl)
		it.Tries++
		it.UpdatedAt = now
		_, err = tx.ExecContext(ctx, `UPDATE items SET state = 'uploading', lease_owner = ?,
			lease_until = ?, tries = tries + 1, updated_at = ? WHERE id = ?`,
			owner, nanos(it.LeaseUntil), n, it.ID)
		if err != nil || from == StateUploading {
			return err // a lease taken over from a dead owner is no change of state
		}
		return audit(ctx, tx, it.ID, from, StateUploading, now, it.SHA256, actorOf(ctx, ActorUploader))
	})
	if errors.Is(err, ErrEmpty) {
		return nil, ErrEmpty
	}
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.dir, err)
	}
	return it, nil
}

// leased runs an update of id guarded by owner's lease, plus then (if not nil) in the
// same transaction. ErrLeaseLost when owner does not hold the lease any more.
func (s *Spool) leased(ctx context.Context, what, id, owner, set string, args []any, then func(ctx context.Context, tx *sql.Tx) error) error {
	err := s.writeGrouped(ctx, what, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE items SET `+set+`
			WHERE id = ? AND lease_owner = ? AND state = 'uploading'`, append(args, id, owner)...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			var st string
			err := tx.QueryRowContext(ctx, `SELECT state FROM items WHERE id = ?`, id).Scan(&st)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return ErrLeaseLost
		}
		if then != nil {
			return then(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool %s: %s item %s: %w", s.dir, what, id, err)
	}
	return nil
}

// Renew extends owner's lease on id. ErrLeaseLost if owner no longer holds it.
func (s *Spool) Renew(ctx context.Context, id, owner string, ttl time.Duration) error {
	now := s.nowUTC()
	return s.leased(ctx, "renew lease of", id, owner, `lease_until = ?`,
		[]any{nanos(now.Add(ttl))}, nil)
}

// Release gives the lease back without changing the state (shutdown). The item is
// leasable again at once and keeps its upload URL.
func (s *Spool) Release(ctx context.Context, id, owner string) error {
	err := s.leased(ctx, "release", id, owner, `lease_owner = '', lease_until = 0, updated_at = ?`,
		[]any{nanos(s.nowUTC())}, nil)
	if err == nil {
		s.signal()
	}
	return err
}

// NextDue is the earliest next_attempt of a waiting item (zero if none): when to look again.
func (s *Spool) NextDue(ctx context.Context) (time.Time, error) {
	var n sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT MIN(next_attempt) FROM items WHERE state = 'waiting'`).Scan(&n)
	if err != nil {
		return time.Time{}, fmt.Errorf("spool %s: next due: %w", s.dir, err)
	}
	if !n.Valid {
		return time.Time{}, nil
	}
	return fromNanos(n.Int64), nil
}

// SetUploadURL records the tus upload URL (state uploading). Called before the first PATCH.
// url "" clears it (the server lost the upload: create again).
func (s *Spool) SetUploadURL(ctx context.Context, id, owner, url string) error {
	return s.leased(ctx, "set upload url of", id, owner, `upload_url = ?, updated_at = ?`,
		[]any{url, nanos(s.nowUTC())}, nil)
}

// MarkVerified records the server's confirmation of the whole-file digest and, in the
// same transaction, the verified event in the outbox. Ends the lease.
func (s *Spool) MarkVerified(ctx context.Context, id, owner, location string) error {
	now := s.nowUTC()
	err := s.leased(ctx, "mark verified", id, owner, `state = 'verified', location = ?, verified_at = ?,
		lease_owner = '', lease_until = 0, last_error = '', updated_at = ?`,
		[]any{location, nanos(now), nanos(now)},
		func(ctx context.Context, tx *sql.Tx) error {
			if err := s.insertEvent(ctx, tx, id, EventVerified, now); err != nil {
				return err
			}
			return auditItem(ctx, tx, id, StateUploading, StateVerified, now, actorOf(ctx, ActorUploader))
		})
	if err == nil {
		s.log.Info("spool: verified", "id", id)
	}
	return err
}

// MarkWaiting ends the lease with a transient failure: retry at next. counted=true
// increments Attempts (the server answered about this file: 5xx, 460).
func (s *Spool) MarkWaiting(ctx context.Context, id, owner string, next time.Time, reason string, counted bool) error {
	now := s.nowUTC()
	err := s.leased(ctx, "mark waiting", id, owner, `state = 'waiting', next_attempt = ?, last_error = ?,
		attempts = attempts + ?, lease_owner = '', lease_until = 0, updated_at = ?`,
		[]any{nanos(next), reason, boolInt(counted), nanos(now)},
		func(ctx context.Context, tx *sql.Tx) error {
			return auditItem(ctx, tx, id, StateUploading, StateWaiting, now, actorOf(ctx, ActorUploader))
		})
	if err == nil {
		s.signal()
	}
	return err
}

// Quarantine ends the lease with a permanent failure and writes the quarantined event.
// The bytes stay: a person may retry.
func (s *Spool) Quarantine(ctx context.Context, id, owner, reason string) error {
	now := s.nowUTC()
	err := s.leased(ctx, "quarantine", id, owner, `state = 'quarantined', reason = ?, last_error = ?,
		lease_owner = '', lease_until = 0, updated_at = ?`,
		[]any{reason, reason, nanos(now)},
		func(ctx context.Context, tx *sql.Tx) error {
			if err := s.insertEvent(ctx, tx, id, EventQuarantined, now); err != nil {
				return err
			}
			return auditItem(ctx, tx, id, StateUploading, StateQuarantined, now, actorOf(ctx, ActorUploader))
		})
	if err == nil {
		s.log.Warn("spool: quarantined", "id", id, "reason", reason)
	}
	return err
}

// Retry puts a quarantined (or waiting) item back to received with attempts reset.
// The upload URL is kept: the uploader HEADs it and starts again on 404. It bumps the
// wake counter, so an agent in another process notices at once (WakeCounter).
// ErrNotFound for an unknown id, ErrNotRetryable for an item in another state. The
// audit actor is cli unless ctx says otherwise (WithActor).
func (s *Spool) Retry(ctx context.Context, id string) error {
	now := s.nowUTC()
	err := s.write(ctx, "retry", func(tx *sql.Tx) error {
		var st, digest string
		err := tx.QueryRowContext(ctx, `SELECT state, sha256 FROM items WHERE id = ?`, id).Scan(&st, &digest)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if st != string(StateQuarantined) && st != string(StateWaiting) {
			return fmt.Errorf("state %s: %w", st, ErrNotRetryable)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE items SET state = 'received', attempts = 0,
			next_attempt = ?, lease_owner = '', lease_until = 0, reason = '', updated_at = ?
			WHERE id = ?`, nanos(now), nanos(now), id); err != nil {
			return err
		}
		if err := audit(ctx, tx, id, State(st), StateReceived, now, digest, actorOf(ctx, ActorCLI)); err != nil {
			return err
		}
		return bumpWake(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("spool %s: retry item %s: %w", s.dir, id, err)
	}
	s.log.Info("spool: retry", "id", id)
	s.signal()
	return nil
}

// RetryState retries every item in state (quarantined or waiting); returns how many.
func (s *Spool) RetryState(ctx context.Context, state State) (int, error) {
	if state != StateQuarantined && state != StateWaiting {
		return 0, fmt.Errorf("spool %s: retry state %q: %w", s.dir, state, ErrNotRetryable)
	}
	now := s.nowUTC()
	var n int
	err := s.write(ctx, "retry", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, sha256 FROM items WHERE state = ? ORDER BY received_at, id`, string(state))
		if err != nil {
			return err
		}
		var ids, digests []string
		for rows.Next() {
			var id, d string
			if err := rows.Scan(&id, &d); err != nil {
				rows.Close()
				return err
			}
			ids, digests = append(ids, id), append(digests, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		al := newAuditLog(tx)
		actor := actorOf(ctx, ActorCLI)
		for i, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE items SET state = 'received', attempts = 0,
				next_attempt = ?, lease_owner = '', lease_until = 0, reason = '', updated_at = ?
				WHERE id = ?`, nanos(now), nanos(now), id); err != nil {
				return err
			}
			if err := al.add(ctx, id, state, StateReceived, now, digests[i], actor); err != nil {
				return err
			}
		}
		n = len(ids)
		if n == 0 {
			return nil
		}
		return bumpWake(ctx, tx)
	})
	if err != nil {
		return 0, fmt.Errorf("spool %s: retry %s items: %w", s.dir, state, err)
	}
	if n > 0 {
		s.log.Info("spool: retry", "state", state, "count", n)
		s.signal()
	}
	return n, nil
}

func bumpWake(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `UPDATE totals SET value = value + 1 WHERE name = 'wake'`)
	return err
}

// Wake bumps the wake counter: every process polling WakeCounter looks for due items
// at once (e.g. after the upload link came back, so items waiting out a backoff are
// tried now). Retry and RetryState bump it themselves.
func (s *Spool) Wake(ctx context.Context) error {
	if err := s.write(ctx, "wake", func(tx *sql.Tx) error { return bumpWake(ctx, tx) }); err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	s.signal()
	return nil
}

// WakeCounter is a number that changes whenever an item was made leasable early by any
// process (Retry, RetryState, Wake); one indexed row read, cheap enough to poll every
// 250 ms. An uploader that sees it change stops its backoff sleep and leases; items
// whose next attempt is still in the future stay waiting (Retry makes its item
// received, so it is due at once).
func (s *Spool) WakeCounter(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT value FROM totals WHERE name = 'wake'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("spool %s: wake counter: %w", s.dir, err)
	}
	return n, nil
}

// WakeWaiting makes every waiting item due now (their backoff was about the link, which
// is back) and bumps the wake counter; attempts are kept. It returns how many items.
func (s *Spool) WakeWaiting(ctx context.Context) (int, error) {
	now := nanos(s.nowUTC())
	var n int64
	err := s.write(ctx, "wake waiting", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE items SET next_attempt = ? WHERE state = 'waiting' AND next_attempt > ?`, now, now)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		return bumpWake(ctx, tx)
	})
	if err != nil {
		return 0, fmt.Errorf("spool %s: wake waiting items: %w", s.dir, err)
	}
	s.signal()
	return int(n), nil
}
