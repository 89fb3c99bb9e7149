package spool

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gabriel-vasile/mimetype"
	"github.com/google/uuid"
)

// Intake: a source hands bytes to the spool (Receive, ReceiveFile) or records a file it
// could not take (Reject). Staging is in stage.go, dedupe in dedupe.go, fingerprints in
// fingerprint.go, the room checks in room.go.

// Receive copies r into the spool (temp file, fsync, SHA-256 and SHA-1 in the same
// pass, description, rename, dir fsync), runs the inspector, applies dedupe, and
// commits the row. It returns the new item: StateReceived, or StateDuplicate (with its
// duplicate event in the outbox). Only after a nil error may the caller release the
// source. ErrFull: no room now, nothing stored, try later. ErrTooLarge: over in.MaxSize.
func (s *Spool) Receive(ctx context.Context, in Intake, r io.Reader) (*Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	allowed, err := s.checkRoom(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive from %s: %w", s.dir, in.Source, err)
	}
	id, err := newID()
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive from %s: %w", s.dir, in.Source, err)
	}
	st, err := s.stageStream(ctx, id, in.MaxSize, allowed, -1, r)
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive item %s from %s: %w", s.dir, id, in.Source, err)
	}
	return s.commit(ctx, in, id, st)
}

// ReceiveFile is Receive for a regular file on disk (a symlink is refused). The bytes
// are copied; the caller releases its own name after a nil error.
func (s *Spool) ReceiveFile(ctx context.Context, in Intake, path string) (*Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive file from %s: %w", s.dir, in.Source, err)
	}
	if !fi.Mode().IsRegular() { // a symlink is not followed: its target may be anywhere
		return nil, fmt.Errorf("spool %s: receive file from %s: not a regular file", s.dir, in.Source)
	}
	if in.MaxSize > 0 && fi.Size() > in.MaxSize {
		return nil, fmt.Errorf("spool %s: receive file from %s (%d bytes, limit %d): %w",
			s.dir, in.Source, fi.Size(), in.MaxSize, ErrTooLarge)
	}
	allowed, err := s.checkRoom(ctx, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive file from %s (%d bytes): %w", s.dir, in.Source, fi.Size(), err)
	}
	id, err := newID()
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive file from %s: %w", s.dir, in.Source, err)
	}
	f, err := openNoFollow(path)
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive item %s from %s: %w", s.dir, id, in.Source, err)
	}
	defer f.Close()
	// The same regular file that was looked at, not something swapped in since.
	if ofi, err := f.Stat(); err != nil || !ofi.Mode().IsRegular() || !os.SameFile(fi, ofi) {
		return nil, fmt.Errorf("spool %s: receive item %s from %s: the file was replaced while it was being taken", s.dir, id, in.Source)
	}
	st, err := s.stageStream(ctx, id, in.MaxSize, allowed, fi.Size(), f)
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive item %s from %s: %w", s.dir, id, in.Source, err)
	}
	return s.commit(ctx, in, id, st)
}

// Reject records a file that was never spooled (too large, unreadable, policy) and
// writes its rejected event to the outbox. reason must not carry patient data.
func (s *Spool) Reject(ctx context.Context, in Intake, size int64, reason string) (*Item, error) {
	id, err := newID()
	if err != nil {
		return nil, fmt.Errorf("spool %s: reject from %s: %w", s.dir, in.Source, err)
	}
	now := s.nowUTC()
	it := newItem(in, id, now)
	it.Size = size
	it.State = StateRejected
	it.Reason = reason
	err = s.write(ctx, "reject", func(tx *sql.Tx) error {
		if err := insertItem(ctx, tx, it, false, nil); err != nil {
			return err
		}
		if err := s.insertEvent(ctx, tx, id, EventRejected, now); err != nil {
			return err
		}
		if err := audit(ctx, tx, id, "", StateRejected, now, "", actorOf(ctx, SourceActor(in.Source))); err != nil {
			return err
		}
		return putFingerprint(ctx, tx, in.Source, in.Fingerprint, id, now)
	})
	if err != nil {
		return nil, fmt.Errorf("spool %s: reject item %s from %s: %w", s.dir, id, in.Source, err)
	}
	s.log.Info("spool: rejected", "id", id, "source", in.Source, "size", size, "reason", reason)
	return it, nil
}

// commit inspects the staged bytes, installs them with their description, applies
// dedupe and commits the row (grouped with concurrent intakes: group.go). On failure
// the stored bytes are removed: the source still has them.
func (s *Spool) commit(ctx context.Context, in Intake, id string, st staged) (*Item, error) {
	var env *Envelope
	if !in.NoInspect {
		env = s.inspect(id, st.tmp)
	}
	now := s.nowUTC()
	it := newItem(in, id, now)
	it.Size = st.size
	it.SHA256 = st.sha256
	it.SHA1 = st.sha1
	it.ContentType = mimetype.Detect(st.head).String()
	it.State = StateReceived
	it.NextAttempt = now
	keys := envelopeKeys(env, st.sha256)
	if env != nil && env.ContentType != "" {
		it.ContentType = env.ContentType
	}
	shard, err := s.install(id, st, describe(it, in.Fingerprint, env, keys))
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive item %s from %s: %w", s.dir, id, in.Source, err)
	}
	actor := actorOf(ctx, SourceActor(in.Source))
	// The shard's fsync and the transaction are shared with concurrent intakes.
	err = s.commitGrouped(ctx, shard, func(ctx context.Context, tx *sql.Tx) error {
		return s.insertReceived(ctx, tx, it, in.Fingerprint, env, keys, actor)
	})
	if err != nil {
		if rerr := s.removeContent(id); rerr != nil {
			s.log.Error("spool: remove content of uncommitted item", "id", id, "err", rerr)
		}
		if dbFull(err) {
			err = fmt.Errorf("%w: %w", ErrFull, err)
		}
		return nil, fmt.Errorf("spool %s: commit item %s from %s: %w", s.dir, id, in.Source, err)
	}
	if it.State == StateDuplicate {
		// Recovery removes the bytes too if this fails or we crash here.
		if err := s.removeContent(id); err != nil {
			s.log.Error("spool: remove content of duplicate", "id", id, "err", err)
		}
		s.log.Info("spool: duplicate", "id", id, "source", in.Source, "duplicate_of", it.DuplicateOf,
			"sha256", it.SHA256, "size", it.Size)
		// The original's parts may have failed (spool full) when it came: finish
		// them before this retry lets the source go.
		if pending, err := s.pendingParts(ctx, it.DuplicateOf); err != nil || pending {
			orig, gerr := s.Get(ctx, it.DuplicateOf)
			if err == nil && gerr == nil {
				err = s.receiveParts(ctx, orig)
			}
			if err == nil {
				err = gerr
			}
			if err != nil {
				return nil, fmt.Errorf("spool %s: parts of %s (duplicate %s): %w", s.dir, it.DuplicateOf, id, err)
			}
		}
		return it, nil
	}
	if env != nil && env.Parts > 0 && s.opts.Split != nil {
		// Before Receive returns: the source is released only with the parts spooled.
		if err := s.receiveParts(ctx, it); err != nil {
			return nil, err
		}
		if it.Meta, err = s.metaOf(ctx, id); err != nil {
			return nil, err
		}
	}
	s.log.Info("spool: received", "id", id, "source", in.Source, "sha256", it.SHA256, "size", it.Size,
		"content_type", it.ContentType, "control_id_reused", it.ControlIDReused, "corrects", it.Corrects)
	s.signal()
	return it, nil
}

// envelopeKeys is the envelope dedupe works with: without a content key, the bytes are
// the content.
func envelopeKeys(env *Envelope, sha256 string) *Envelope {
	if env == nil || env.DedupeKey == "" || env.ContentKey != "" {
		return env
	}
	keys := new(Envelope)
	*keys = *env
	keys.ContentKey = "sha256:" + sha256
	return keys
}

// insertReceived applies dedupe to it (received) and inserts it with its audit row,
// fingerprint and, for a duplicate, the duplicate event.
func (s *Spool) insertReceived(ctx context.Context, tx *sql.Tx, it *Item, fingerprint string, env, keys *Envelope, actor string) error {
	if err := s.dedupe(ctx, tx, it, keys, it.ReceivedAt); err != nil {
		return err
	}
	if env != nil && len(env.Data) > 0 {
		it.Envelope = mergeEnvelope(env.Data, it.Corrects, it.ControlIDReused)
	}
	dup := it.State == StateDuplicate
	if err := insertItem(ctx, tx, it, !dup, keys); err != nil {
		return err
	}
	if dup {
		if err := s.insertEvent(ctx, tx, it.ID, EventDuplicate, it.ReceivedAt); err != nil {
			return err
		}
	}
	if err := audit(ctx, tx, it.ID, "", it.State, it.ReceivedAt, it.SHA256, actor); err != nil {
		return err
	}
	if !dup && env != nil && env.Parts > 0 && s.opts.Split != nil {
		if err := insertPending(ctx, tx, it.ID, env.Parts); err != nil {
			return err
		}
	}
	return putFingerprint(ctx, tx, it.Source, fingerprint, it.ID, it.ReceivedAt)
}

// describe is the sidecar of an item about to be committed.
func describe(it *Item, fingerprint string, env, keys *Envelope) *sidecar {
	sc := &sidecar{Version: sidecarVersion, ID: it.ID, Source: it.Source, SourceKind: it.SourceKind,
		SourceRef: it.SourceRef, Filename: it.Filename, Size: it.Size, SHA256: it.SHA256, SHA1: it.SHA1,
		ContentType: it.ContentType, Priority: it.Priority, ReceivedAt: it.ReceivedAt, Meta: it.Meta,
		Fingerprint: fingerprint}
	if keys != nil {
		sc.DedupeKey, sc.ContentKey, sc.OrderKey = keys.DedupeKey, keys.ContentKey, keys.OrderKey
		sc.IsCorrection = keys.IsCorrection
	}
	if env != nil {
		sc.Envelope = env.Data
	}
	return sc
}

func newItem(in Intake, id string, now time.Time) *Item {
	return &Item{
		ID:         id,
		Source:     in.Source,
		SourceKind: in.SourceKind,
		SourceRef:  in.SourceRef,
		Filename:   in.Filename,
		Priority:   in.Priority,
		ReceivedAt: now,
		UpdatedAt:  now,
		Meta:       in.Meta,
	}
}

func insertItem(ctx context.Context, tx *sql.Tx, it *Item, stored bool, env *Envelope) error {
	meta := []byte("{}")
	if len(it.Meta) > 0 {
		var err error
		if meta, err = json.Marshal(it.Meta); err != nil {
			return fmt.Errorf("meta: %w", err)
		}
	}
	var envData []byte
	if len(it.Envelope) > 0 {
		envData = it.Envelope
	}
	var dk, ck, ok string
	if env != nil {
		dk, ck, ok = env.DedupeKey, env.ContentKey, env.OrderKey
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO items (id, source, source_kind, source_ref, filename,
		size, sha256, sha1, content_type, priority, state, stored, next_attempt, received_at,
		updated_at, meta, envelope, dedupe_key, content_key, order_key, duplicate_of, corrects,
		control_id_reused, reason)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		it.ID, it.Source, it.SourceKind, it.SourceRef, it.Filename, it.Size, it.SHA256, it.SHA1,
		it.ContentType, int(it.Priority), string(it.State), boolInt(stored), nanos(it.NextAttempt),
		nanos(it.ReceivedAt), nanos(it.UpdatedAt), string(meta), envData, dk, ck, ok,
		it.DuplicateOf, it.Corrects, boolInt(it.ControlIDReused), it.Reason)
	if err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

// insertEvent adds one outbox row per sink. The same event twice is one row per sink
// (its id is derived from item and type, so it would be the same event anyway).
func (s *Spool) insertEvent(ctx context.Context, tx *sql.Tx, id, typ string, now time.Time) error {
	for _, sink := range s.sinks {
		_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO outbox (item_id, type, sink, created_at)
			VALUES (?, ?, ?, ?)`, id, typ, sink, nanos(now))
		if err != nil {
			return fmt.Errorf("outbox %s for %s: %w", typ, sink, err)
		}
	}
	return nil
}

func newID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new item id: %w", err)
	}
	return u.String(), nil
}
