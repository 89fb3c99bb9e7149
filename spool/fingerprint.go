package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Fingerprints let a folder source with after: keep recognise a file it already took
// (path, size, mtime and whatever else the source puts in Intake.Fingerprint). They
// are written in the intake's transaction and outlive the item rows.

// PruneFingerprints forgets fingerprints of source that are not in present (the
// fingerprints of the files a full scan just saw) and older than keep_done. A file
// kept in its folder (after: keep) is thus never taken twice however long it
// stays, while the table does not grow with files long gone.
func (s *Spool) PruneFingerprints(ctx context.Context, source string, present map[string]bool) (int, error) {
	cutoff := nanos(s.nowUTC().Add(-s.opts.KeepDone))
	rows, err := s.r.QueryContext(ctx, `SELECT fp FROM fingerprints WHERE source = ? AND created_at < ?`, source, cutoff)
	if err != nil {
		return 0, fmt.Errorf("spool %s: prune fingerprints of %s: %w", s.dir, source, err)
	}
	var gone []string
	for rows.Next() {
		var fp string
		if err := rows.Scan(&fp); err != nil {
			rows.Close()
			return 0, fmt.Errorf("spool %s: prune fingerprints of %s: %w", s.dir, source, err)
		}
		if !present[fp] {
			gone = append(gone, fp)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("spool %s: prune fingerprints of %s: %w", s.dir, source, err)
	}
	if len(gone) == 0 {
		return 0, nil
	}
	err = s.write(ctx, "prune fingerprints", func(tx *sql.Tx) error {
		for _, fp := range gone {
			if _, err := tx.ExecContext(ctx, `DELETE FROM fingerprints WHERE source = ? AND fp = ?`, source, fp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("spool %s: prune fingerprints of %s: %w", s.dir, source, err)
	}
	return len(gone), nil
}

// HasFingerprint reports whether an item of source was taken with this fingerprint.
func (s *Spool) HasFingerprint(ctx context.Context, source, fingerprint string) (bool, error) {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM fingerprints WHERE source = ? AND fp = ?`,
		source, fingerprint).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("spool %s: fingerprint of %s: %w", s.dir, source, err)
	}
	return true, nil
}

func putFingerprint(ctx context.Context, tx *sql.Tx, source, fingerprint, id string, now time.Time) error {
	if fingerprint == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO fingerprints (source, fp, item_id, created_at)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (source, fp) DO UPDATE SET item_id = excluded.item_id, created_at = excluded.created_at`,
		source, fingerprint, id, nanos(now))
	if err != nil {
		return fmt.Errorf("fingerprint: %w", err)
	}
	return nil
}
