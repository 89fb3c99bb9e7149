package spool

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// dedupe applies CONTRACT.md's duplicate and correction rules to it, inside the
// transaction that inserts it, so two concurrent intakes of the same thing cannot both
// pass.
func (s *Spool) dedupe(ctx context.Context, tx *sql.Tx, it *Item, env *Envelope, now time.Time) error {
	cutoff := nanos(now.Add(-s.opts.KeepDone))
	// An item still in flight counts however old it is; a finished one for keep_done.
	// A quarantined item is no original either: its stored bytes may be why it failed.
	const live = `state NOT IN ('rejected', 'duplicate', 'quarantined')
		AND (received_at >= ? OR state NOT IN ('published', 'done'))`
	if env == nil || env.DedupeKey == "" {
		var first string
		err := tx.QueryRowContext(ctx, `SELECT id FROM items WHERE source = ? AND sha256 = ? AND `+live+`
			ORDER BY received_at, id LIMIT 1`, it.Source, it.SHA256, cutoff).Scan(&first)
		switch {
		case err == nil:
			it.State, it.DuplicateOf = StateDuplicate, first
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("dedupe: %w", err)
		}
	} else {
		rows, err := tx.QueryContext(ctx, `SELECT id, content_key FROM items WHERE dedupe_key = ? AND `+live+`
			ORDER BY received_at, id`, env.DedupeKey, cutoff)
		if err != nil {
			return fmt.Errorf("dedupe: %w", err)
		}
		seen := false
		for rows.Next() {
			var id, ck string
			if err := rows.Scan(&id, &ck); err != nil {
				rows.Close()
				return fmt.Errorf("dedupe: %w", err)
			}
			seen = true
			if ck == env.ContentKey {
				it.State, it.DuplicateOf = StateDuplicate, id
				break
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("dedupe: %w", err)
		}
		// Same control id, other content: never dropped, flagged.
		it.ControlIDReused = seen && it.State != StateDuplicate
	}
	if it.State != StateDuplicate && env != nil && env.IsCorrection && env.OrderKey != "" {
		var prev string
		err := tx.QueryRowContext(ctx, `SELECT id FROM items WHERE order_key = ?
			AND state NOT IN ('rejected', 'duplicate') ORDER BY received_at DESC, id DESC LIMIT 1`,
			env.OrderKey).Scan(&prev)
		switch {
		case err == nil:
			it.Corrects = prev
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("find corrected item: %w", err)
		}
	}
	return nil
}

// inspect runs the inspector; a panicking inspector is garbage in, not a failed intake.
func (s *Spool) inspect(id, path string) (env *Envelope) {
	if s.opts.Inspect == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("spool: inspector panicked", "id", id, "panic", fmt.Sprint(r))
			env = nil
		}
	}()
	return s.opts.Inspect(path)
}

// mergeEnvelope adds corrects and control_id_reused to the envelope's JSON object, as
// the event's data.hl7 carries them. Data that is not an object is kept as it is.
func mergeEnvelope(data json.RawMessage, corrects string, reused bool) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return append(json.RawMessage(nil), data...)
	}
	if corrects == "" {
		m["corrects"] = json.RawMessage("null")
	} else {
		b, _ := json.Marshal(corrects)
		m["corrects"] = b
	}
	m["control_id_reused"] = json.RawMessage(fmt.Sprint(reused))
	out, err := json.Marshal(m)
	if err != nil {
		return append(json.RawMessage(nil), data...)
	}
	return out
}
