package spool

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Recovery, in two forms: recover runs at every agent start-up and repairs what a crash
// leaves (temp files, leases, published items, content without rows, which is taken
// back); Recover is `courier spool recover`, for a database that was lost or damaged,
// rebuilding the rows from the stored files' descriptions.

// recover brings the spool back to a consistent state after whatever stopped the last
// process: a clean shutdown, a crash, a power cut. Only the lock holder runs it.
func (s *Spool) recover(ctx context.Context) error {
	// Half-written files: their rows were never committed, their sources still exist.
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("read tmp: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return fmt.Errorf("remove temp file: %w", err)
		}
	}
	if len(ents) > 0 {
		s.log.Info("spool: removed temp files left by a crash", "count", len(ents))
	}

	var leases, dropped int64
	now := s.nowUTC()
	err = s.write(ctx, "recover", func(tx *sql.Tx) error {
		// Leases of a dead process: the items stay uploading with their upload URL and
		// become leasable at once, so the uploader resumes with a HEAD.
		res, err := tx.ExecContext(ctx, `UPDATE items SET lease_owner = '', lease_until = 0
			WHERE lease_owner != '' OR lease_until != 0`)
		if err != nil {
			return err
		}
		leases, _ = res.RowsAffected()
		// A sink removed from the config would hold its items verified (bytes and all)
		// for ever. Only an explicit list counts: an empty one is more likely a wiring
		// slip than a wish to lose events.
		if len(s.opts.Sinks) > 0 {
			q, args := `DELETE FROM outbox WHERE published_at = 0 AND sink NOT IN (`, []any{}
			for i, sink := range s.sinks {
				if i > 0 {
					q += ", "
				}
				q += "?"
				args = append(args, sink)
			}
			if res, err = tx.ExecContext(ctx, q+")", args...); err != nil {
				return err
			}
			dropped, _ = res.RowsAffected()
		}
		// Verified items whose events all went out (or whose last sinks were dropped).
		rows, err := tx.QueryContext(ctx, `SELECT id, sha256 FROM items WHERE state = 'verified'
			AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.item_id = items.id AND o.type = ? AND o.published_at = 0)`,
			EventVerified)
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
		for i, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE items SET state = 'published', updated_at = ? WHERE id = ?`,
				nanos(now), id); err != nil {
				return err
			}
			if err := al.add(ctx, id, StateVerified, StatePublished, now, digests[i], ActorRecovery); err != nil {
				return err
			}
		}
		return s.recoverEvents(ctx, tx, now)
	})
	if err != nil {
		return err
	}
	if leases > 0 {
		s.log.Info("spool: cleared leases of the previous process", "count", leases)
	}
	if dropped > 0 {
		s.log.Warn("spool: dropped unpublished events of sinks no longer configured", "count", dropped)
	}

	if err := s.finishPublished(WithActor(ctx, ActorRecovery)); err != nil {
		return err
	}
	if err := s.reconcileContent(ctx); err != nil {
		return err
	}
	return s.recoverParts(ctx)
}

// recoverEvents writes the quarantined event of items that have none (Recover
// quarantines bytes that differ from their description without knowing the sinks).
func (s *Spool) recoverEvents(ctx context.Context, tx *sql.Tx, now time.Time) error {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM items WHERE state = 'quarantined'
		AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.item_id = items.id AND o.type = ?)`, EventQuarantined)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.insertEvent(ctx, tx, id, EventQuarantined, now); err != nil {
			return err
		}
	}
	return nil
}

// reconcileContent compares content/ with the rows. Content is never deleted because
// the database does not know it: with its description it is taken back as a received
// item (a crash between install and commit, or rows lost with the WAL), without one it
// is left for a person (`courier spool verify` lists it). Only bytes whose row says
// they are no longer needed (done, duplicate) are removed, and descriptions that
// describe nothing.
func (s *Spool) reconcileContent(ctx context.Context) error {
	files, err := s.scanContent()
	if err != nil {
		return err
	}
	stored := map[string]bool{}
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM items WHERE stored = 1`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		stored[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var takeBack []string
	var removed, undescribed int
	for id, f := range files {
		if stored[id] {
			continue
		}
		var one int
		err := s.r.QueryRowContext(ctx, `SELECT 1 FROM items WHERE id = ?`, id).Scan(&one)
		known := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		switch {
		case known || !f.content:
			// The row says the bytes are not needed any more, or a description
			// describes nothing (a crash between the two renames or removals).
			if err := s.removeContent(id); err != nil {
				return fmt.Errorf("remove content of item %s: %w", id, err)
			}
			removed++
		case f.sidecar:
			takeBack = append(takeBack, id)
		default:
			undescribed++
			s.log.Error("spool: content without a row or a description is kept; see `courier spool verify`", "id", id)
		}
	}
	if removed > 0 {
		s.log.Info("spool: removed content no longer needed", "count", removed)
	}
	if len(takeBack) > 0 {
		rep, err := s.takeBack(ctx, takeBack)
		if err != nil {
			return err
		}
		s.log.Warn("spool: took back content the database did not know", "count", rep.Recovered,
			"mismatched", len(rep.Mismatched))
		if len(rep.Mismatched) > 0 {
			if err := s.write(ctx, "recover", func(tx *sql.Tx) error { return s.recoverEvents(ctx, tx, s.nowUTC()) }); err != nil {
				return err
			}
		}
	}
	var backfilled int
	for id := range stored {
		f, ok := files[id]
		if !ok || !f.content {
			// Should never happen (the bytes are durable before the row); the uploader
			// will fail to open it and quarantine the item for a person to look at.
			s.log.Error("spool: item has no content file", "id", id)
			continue
		}
		if !f.sidecar {
			// Stored before descriptions existed: describe it now, so it too survives
			// the loss of the database.
			if err := s.backfillSidecar(ctx, id); err != nil {
				s.log.Error("spool: cannot describe stored item", "id", id, "err", err)
				continue
			}
			backfilled++
		}
	}
	if backfilled > 0 {
		s.log.Info("spool: wrote descriptions of items stored before they existed", "count", backfilled)
	}
	return nil
}

// backfillSidecar writes the description of a stored item from its row.
func (s *Spool) backfillSidecar(ctx context.Context, id string) error {
	it, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	var fp sql.NullString
	keys := &Envelope{}
	if err := s.r.QueryRowContext(ctx, `SELECT i.dedupe_key, i.content_key, i.order_key,
		(SELECT fp FROM fingerprints f WHERE f.item_id = i.id LIMIT 1) FROM items i WHERE i.id = ?`, id).Scan(
		&keys.DedupeKey, &keys.ContentKey, &keys.OrderKey, &fp); err != nil {
		return err
	}
	sc := describe(it, fp.String, nil, keys)
	sc.Envelope = it.Envelope // already merged; recovery merges again, which is harmless
	tmp := filepath.Join(s.tmpDir(), id+sidecarExt)
	if err := writeSidecar(tmp, sc); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, s.sidecarPath(id)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(s.sidecarPath(id)))
}

// contentFiles says what content/ holds for one id.
type contentFiles struct{ content, sidecar bool }

func (s *Spool) scanContent() (map[string]*contentFiles, error) {
	out := map[string]*contentFiles{}
	shards, err := os.ReadDir(s.contentDir())
	if err != nil {
		return nil, fmt.Errorf("read content: %w", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.contentDir(), sh.Name()))
		if err != nil {
			return nil, fmt.Errorf("read content: %w", err)
		}
		for _, f := range files {
			id, isSidecar := strings.CutSuffix(f.Name(), sidecarExt)
			cf := out[id]
			if cf == nil {
				cf = &contentFiles{}
				out[id] = cf
			}
			if isSidecar {
				cf.sidecar = true
			} else {
				cf.content = true
			}
		}
	}
	return out, nil
}

// finishPublished finishes every item whose events are out but whose bytes may still
// be here.
func (s *Spool) finishPublished(ctx context.Context) error {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM items WHERE state = 'published'`)
	if err != nil {
		return fmt.Errorf("spool %s: published items: %w", s.dir, err)
	}
	var published []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("spool %s: published items: %w", s.dir, err)
		}
		published = append(published, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("spool %s: published items: %w", s.dir, err)
	}
	return s.finish(ctx, published...)
}

// RecoverReport is what Recover did.
type RecoverReport struct {
	// MovedAside is where a damaged database was moved ("" if it was not damaged); its
	// -wal and -shm files, if any, were moved beside it with the same name plus suffix.
	MovedAside string
	Known      int // items with content the database already had
	Recovered  int // rows rebuilt from their description, now received (or quarantined)
	// Mismatched: bytes that differ from their description (size or SHA-256). Their
	// rows are rebuilt quarantined, with the reason; nothing is deleted.
	Mismatched []string
	// Undescribed: content without a description (written before descriptions existed,
	// or damaged). Kept where it is, not queued: a person decides.
	Undescribed []string
	// Unreadable: descriptions that could not be read. Kept, not queued.
	Unreadable []string
}

// Recover is `courier spool recover`: it takes the spool's lock (ErrLocked while the
// agent runs), moves a damaged database aside (never deletes it), opens or creates the
// database, and rebuilds a row for every stored file the database does not know, from
// the file's description: received, so its upload starts again (a server that already
// verified it answers as for any re-upload). Rows the database has are not touched.
// Nothing in content/ is deleted.
func Recover(ctx context.Context, opts Options) (*RecoverReport, error) {
	rep := &RecoverReport{}
	s, err := open(ctx, opts, modeRecover)
	if errors.Is(err, ErrCorrupt) {
		dir, _ := filepath.Abs(opts.Dir)
		if rep.MovedAside, err = moveAside(dir, time.Now()); err != nil {
			return rep, err
		}
		s, err = open(ctx, opts, modeRecover)
	}
	if err != nil {
		return rep, err
	}
	defer s.Close()
	files, err := s.scanContent()
	if err != nil {
		return rep, fmt.Errorf("spool %s: %w", s.dir, err)
	}
	var unknown []string
	for id, f := range files {
		if !f.content {
			continue
		}
		var one int
		err := s.r.QueryRowContext(ctx, `SELECT 1 FROM items WHERE id = ?`, id).Scan(&one)
		switch {
		case err == nil:
			rep.Known++
		case !errors.Is(err, sql.ErrNoRows):
			return rep, fmt.Errorf("spool %s: recover: %w", s.dir, err)
		case f.sidecar:
			unknown = append(unknown, id)
		default:
			rep.Undescribed = append(rep.Undescribed, id)
		}
	}
	slices.Sort(unknown)
	slices.Sort(rep.Undescribed)
	tb, err := s.takeBack(ctx, unknown)
	rep.Recovered, rep.Mismatched, rep.Unreadable = tb.Recovered, tb.Mismatched, tb.Unreadable
	if err != nil {
		return rep, err
	}
	s.log.Warn("spool: recovered", "recovered", rep.Recovered, "known", rep.Known,
		"mismatched", len(rep.Mismatched), "undescribed", len(rep.Undescribed), "unreadable", len(rep.Unreadable))
	return rep, nil
}

// moveAside renames a damaged spool.db (and its -wal, -shm) to spool.db.damaged-<time>.
func moveAside(dir string, now time.Time) (string, error) {
	base := filepath.Join(dir, "spool.db.damaged-"+now.UTC().Format("20060102T150405Z"))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		from := filepath.Join(dir, "spool.db"+suffix)
		if err := os.Rename(from, base+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("spool %s: move the damaged database aside: %w", dir, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("spool %s: move the damaged database aside: %w", dir, err)
	}
	return base, nil
}

// takeBack rebuilds the rows of ids (content and description present, no row), a few
// hundred per transaction.
func (s *Spool) takeBack(ctx context.Context, ids []string) (RecoverReport, error) {
	var rep RecoverReport
	type rebuilt struct {
		it          *Item
		fingerprint string
		env, keys   *Envelope
	}
	var batch []rebuilt
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.write(ctx, "recover", func(tx *sql.Tx) error {
			for _, b := range batch {
				if b.it.State == StateQuarantined {
					// Its quarantined event is written by the agent's next Open, which
					// knows the configured sinks (recoverEvents).
					if err := insertItem(ctx, tx, b.it, true, b.keys); err != nil {
						return err
					}
					if err := audit(ctx, tx, b.it.ID, "", StateQuarantined, b.it.UpdatedAt, b.it.SHA256, ActorRecovery); err != nil {
						return err
					}
					continue
				}
				if err := s.insertRecovered(ctx, tx, b.it, b.fingerprint, b.env, b.keys); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("spool %s: recover: %w", s.dir, err)
		}
		rep.Recovered += len(batch)
		batch = batch[:0]
		return nil
	}
	now := s.nowUTC()
	var parts []*Item // recovered parts, to link to their messages
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		sc, err := readSidecar(s.sidecarPath(id))
		if err != nil || sc.ID != id {
			s.log.Error("spool: description unreadable; content kept, not queued", "id", id, "err", err)
			rep.Unreadable = append(rep.Unreadable, id)
			continue
		}
		size, sum, err := hashFile(s.ContentPath(id))
		if err != nil {
			return rep, fmt.Errorf("spool %s: recover item %s: %w", s.dir, id, err)
		}
		it := &Item{ID: id, Source: sc.Source, SourceKind: sc.SourceKind, SourceRef: sc.SourceRef,
			Filename: sc.Filename, Size: sc.Size, SHA256: sc.SHA256, SHA1: sc.SHA1,
			ContentType: sc.ContentType, Priority: sc.Priority, State: StateReceived,
			ReceivedAt: sc.ReceivedAt.UTC(), UpdatedAt: now, NextAttempt: now, Meta: sc.Meta}
		var env, keys *Envelope
		if sc.DedupeKey != "" || sc.OrderKey != "" || len(sc.Envelope) > 0 {
			env = &Envelope{DedupeKey: sc.DedupeKey, ContentKey: sc.ContentKey, OrderKey: sc.OrderKey,
				IsCorrection: sc.IsCorrection, Data: sc.Envelope}
			keys = env
		}
		if size != sc.Size || sum != sc.SHA256 {
			it.State = StateQuarantined
			it.Reason = fmt.Sprintf("recovered bytes do not match their description (%d bytes, sha256 %s; described %d bytes, sha256 %s)",
				size, sum, sc.Size, sc.SHA256)
			it.LastError = it.Reason
			if len(sc.Envelope) > 0 {
				it.Envelope = mergeEnvelope(sc.Envelope, "", false)
			}
			rep.Mismatched = append(rep.Mismatched, id)
			s.log.Error("spool: recovered bytes differ from their description; quarantined", "id", id)
		}
		batch = append(batch, rebuilt{it: it, fingerprint: sc.Fingerprint, env: env, keys: keys})
		if it.Meta[MetaPartOf] != "" && it.State != StateQuarantined {
			parts = append(parts, it)
		}
		if len(batch) >= 256 {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	if err := flush(); err != nil {
		return rep, err
	}
	if err := s.relinkParts(ctx, parts); err != nil {
		return rep, err
	}
	if rep.Recovered > 0 {
		s.signal()
	}
	return rep, nil
}

// insertRecovered inserts a rebuilt item as received. Dedupe runs for the flags it
// sets (corrects, control_id_reused), but a recovered item is never made a duplicate:
// its bytes may be the only copy left.
func (s *Spool) insertRecovered(ctx context.Context, tx *sql.Tx, it *Item, fingerprint string, env, keys *Envelope) error {
	if err := s.dedupe(ctx, tx, it, keys, it.ReceivedAt); err != nil {
		return err
	}
	it.State, it.DuplicateOf = StateReceived, ""
	if env != nil && len(env.Data) > 0 {
		it.Envelope = mergeEnvelope(env.Data, it.Corrects, it.ControlIDReused)
	}
	if err := insertItem(ctx, tx, it, true, keys); err != nil {
		return err
	}
	if err := audit(ctx, tx, it.ID, "", StateReceived, it.UpdatedAt, it.SHA256, ActorRecovery); err != nil {
		return err
	}
	return putFingerprint(ctx, tx, it.Source, fingerprint, it.ID, it.UpdatedAt)
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, copyBufSize))
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
