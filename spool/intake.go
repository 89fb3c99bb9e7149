package spool

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/gabriel-vasile/mimetype"
	"github.com/google/uuid"
)

// sniffLen is how much of the head is kept for content-type sniffing (mimetype's
// default read limit).
const sniffLen = 3 << 10

// copyBufSize is the buffer of the intake copy loop: big enough for few syscalls,
// small enough for many concurrent intakes.
const copyBufSize = 256 << 10

// Receive copies r into the spool (temp file, fsync, rename, dir fsync, SHA-256 and
// SHA-1 in the same pass), runs the inspector, applies dedupe, and commits the row.
// It returns the new item: StateReceived, or StateDuplicate (with its duplicate event
// in the outbox). Only after a nil error may the caller release the source.
// ErrFull: no room now, nothing stored, try later. ErrTooLarge: over in.MaxSize.
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
	st, err := s.stageStream(ctx, id, in.MaxSize, allowed, r)
	if err != nil {
		return nil, fmt.Errorf("spool %s: receive item %s from %s: %w", s.dir, id, in.Source, err)
	}
	return s.commit(ctx, in, id, st)
}

// ReceiveFile is Receive for a file on disk. With move=true and path on the spool's
// filesystem, the file is hard-linked into the spool instead of copied (the digest is
// still computed from what is stored); the caller then deletes its own name. Only use
// move=true when the caller's name goes away afterwards (after: delete): a name kept
// or moved elsewhere would share the stored bytes. If linking is impossible (another
// filesystem, no hard links), the file is copied.
func (s *Spool) ReceiveFile(ctx context.Context, in Intake, path string, move bool) (*Item, error) {
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
	if move {
		st, err := s.stageLink(ctx, id, path, in.MaxSize)
		if err == nil {
			return s.commit(ctx, in, id, st)
		}
		if ctx.Err() != nil || errors.Is(err, ErrTooLarge) {
			return nil, fmt.Errorf("spool %s: receive item %s from %s: %w", s.dir, id, in.Source, err)
		}
		s.log.Debug("spool: hard link not possible, copying", "id", id, "err", err)
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
	st, err := s.stageStream(ctx, id, in.MaxSize, allowed, f)
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
		return putFingerprint(ctx, tx, in, id, now)
	})
	if err != nil {
		return nil, fmt.Errorf("spool %s: reject item %s from %s: %w", s.dir, id, in.Source, err)
	}
	s.log.Info("spool: rejected", "id", id, "source", in.Source, "size", size, "reason", reason)
	return it, nil
}

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

// staged is a file durably in content/, not yet committed.
type staged struct {
	size         int64
	sha256, sha1 string
	head         []byte
}

// SpooledBytes is the size of all content held in the spool.
func (s *Spool) SpooledBytes(ctx context.Context) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM items WHERE stored = 1`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("spool %s: spooled bytes: %w", s.dir, err)
	}
	return n, nil
}

// checkRoom says ErrFull when size more bytes would pass max_bytes or min_free_disk. It
// returns how many bytes a stream of unknown size may still write (-1: no cap).
// An empty spool takes anything, so a file larger than max_bytes still gets through
// instead of being refused forever. The cap is soft: concurrent intakes are not
// reserved against each other.
func (s *Spool) checkRoom(ctx context.Context, size int64) (int64, error) {
	allowed := int64(-1)
	if s.opts.MaxBytes > 0 {
		spooled, err := s.SpooledBytes(ctx)
		if err != nil {
			return 0, err
		}
		if spooled > 0 {
			if spooled+size > s.opts.MaxBytes {
				return 0, fmt.Errorf("%d bytes spooled, max_bytes %d: %w", spooled, s.opts.MaxBytes, ErrFull)
			}
			allowed = s.opts.MaxBytes - spooled
		}
	}
	if s.opts.MinFreeDisk > 0 {
		free, err := freeDisk(s.dir)
		if err != nil {
			return 0, fmt.Errorf("free disk space: %w", err)
		}
		if free-size < s.opts.MinFreeDisk {
			return 0, fmt.Errorf("%d bytes free, min_free_disk %d: %w", free, s.opts.MinFreeDisk, ErrFull)
		}
	}
	return allowed, nil
}

// stageStream writes r to tmp/, hashing as it goes, and installs it in content/.
func (s *Spool) stageStream(ctx context.Context, id string, maxSize, allowed int64, r io.Reader) (st staged, err error) {
	tmp := filepath.Join(s.tmpDir(), id)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return st, fmt.Errorf("create temp file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			if isNoSpace(err) && !errors.Is(err, ErrFull) {
				err = fmt.Errorf("%w: %w", ErrFull, err)
			}
		}
	}()
	h := newHasher()
	var w io.Writer = io.MultiWriter(f, h)
	if allowed >= 0 {
		w = &capWriter{w: w, left: allowed}
	}
	src := io.Reader(ctxReader{ctx, r})
	if maxSize > 0 {
		src = io.LimitReader(src, maxSize+1)
	}
	n, err := io.CopyBuffer(w, src, make([]byte, copyBufSize))
	if err != nil {
		return st, fmt.Errorf("write temp file: %w", err)
	}
	if maxSize > 0 && n > maxSize {
		return st, fmt.Errorf("more than %d bytes: %w", maxSize, ErrTooLarge)
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("fsync temp file: %w", err)
	}
	if err := f.Close(); err != nil {
		return st, fmt.Errorf("close temp file: %w", err)
	}
	if err := s.install(id, tmp); err != nil {
		return st, err
	}
	return h.staged(n), nil
}

// stageLink hard-links path into tmp/, hashes the stored bytes, fsyncs them and
// installs them in content/.
func (s *Spool) stageLink(ctx context.Context, id, path string, maxSize int64) (st staged, err error) {
	tmp := filepath.Join(s.tmpDir(), id)
	if err := os.Link(path, tmp); err != nil {
		return st, err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp) // our name only: the caller's file stays
		}
	}()
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		// Not writable by us; fsync works on a read-only descriptor where it matters.
		if f, err = os.Open(tmp); err != nil {
			return st, err
		}
	}
	defer f.Close()
	h := newHasher()
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, make([]byte, copyBufSize))
	if err != nil {
		return st, fmt.Errorf("read linked file: %w", err)
	}
	if maxSize > 0 && n > maxSize {
		return st, fmt.Errorf("more than %d bytes: %w", maxSize, ErrTooLarge)
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("fsync linked file: %w", err)
	}
	if err := f.Close(); err != nil {
		return st, err
	}
	if err := s.install(id, tmp); err != nil {
		return st, err
	}
	return h.staged(n), nil
}

// install renames a durable temp file to its content path and makes the rename durable.
func (s *Spool) install(id, tmp string) error {
	final := s.ContentPath(id)
	shard := filepath.Dir(final)
	if _, err := os.Stat(shard); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(shard, 0o750); err != nil {
			return fmt.Errorf("create content folder: %w", err)
		}
		if err := syncDir(s.contentDir()); err != nil {
			return fmt.Errorf("fsync content folder: %w", err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("move into content: %w", err)
	}
	if err := syncDir(shard); err != nil {
		os.Remove(final)
		return fmt.Errorf("fsync content folder: %w", err)
	}
	return nil
}

// commit inspects the stored bytes, applies dedupe and commits the row. On failure the
// stored bytes are removed: the source still has them.
func (s *Spool) commit(ctx context.Context, in Intake, id string, st staged) (*Item, error) {
	path := s.ContentPath(id)
	var env *Envelope
	if !in.NoInspect {
		env = s.inspect(id, path)
	}
	now := s.nowUTC()
	it := newItem(in, id, now)
	it.Size = st.size
	it.SHA256 = st.sha256
	it.SHA1 = st.sha1
	it.ContentType = mimetype.Detect(st.head).String()
	it.State = StateReceived
	it.NextAttempt = now
	var keys *Envelope
	if env != nil {
		keys = env
		if env.ContentType != "" {
			it.ContentType = env.ContentType
		}
		if env.DedupeKey != "" && env.ContentKey == "" {
			// Without a content key the bytes are the content.
			keys = new(Envelope)
			*keys = *env
			keys.ContentKey = "sha256:" + st.sha256
		}
	}
	err := s.write(ctx, "commit", func(tx *sql.Tx) error {
		if err := s.dedupe(ctx, tx, it, keys, now); err != nil {
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
			if err := s.insertEvent(ctx, tx, id, EventDuplicate, now); err != nil {
				return err
			}
		}
		return putFingerprint(ctx, tx, in, id, now)
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
		return it, nil
	}
	s.log.Info("spool: received", "id", id, "source", in.Source, "sha256", it.SHA256, "size", it.Size,
		"content_type", it.ContentType, "control_id_reused", it.ControlIDReused, "corrects", it.Corrects)
	s.signal()
	return it, nil
}

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

func putFingerprint(ctx context.Context, tx *sql.Tx, in Intake, id string, now time.Time) error {
	if in.Fingerprint == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO fingerprints (source, fp, item_id, created_at)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (source, fp) DO UPDATE SET item_id = excluded.item_id, created_at = excluded.created_at`,
		in.Source, in.Fingerprint, id, nanos(now))
	if err != nil {
		return fmt.Errorf("fingerprint: %w", err)
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

// hasher computes both digests and keeps the head for sniffing, in one pass.
type hasher struct {
	s256, s1 hash.Hash
	head     []byte
}

func newHasher() *hasher {
	return &hasher{s256: sha256.New(), s1: sha1.New(), head: make([]byte, 0, sniffLen)}
}

func (h *hasher) Write(p []byte) (int, error) {
	h.s256.Write(p)
	h.s1.Write(p)
	if n := sniffLen - len(h.head); n > 0 {
		h.head = append(h.head, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

func (h *hasher) staged(n int64) staged {
	return staged{size: n, sha256: hex.EncodeToString(h.s256.Sum(nil)),
		sha1: hex.EncodeToString(h.s1.Sum(nil)), head: h.head}
}

// capWriter fails with ErrFull once more than left bytes were written.
type capWriter struct {
	w    io.Writer
	left int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("max_bytes reached while writing: %w", ErrFull)
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
