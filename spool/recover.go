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
	"time"
)

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
		if len(batch) >= 256 {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	if err := flush(); err != nil {
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
