package spool

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
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
)

// Staging: bytes go to tmp/<id> (hashed as they are written, fsynced), the item's
// description to tmp/<id>.json (fsynced), then both are renamed into content/ (the
// description first) and the shard folder is fsynced once. Only then is the row
// committed. Content thus always describes itself: if the database is lost, `courier
// spool recover` rebuilds every row from content/ (see recover.go).

// sniffLen is how much of the head is kept for content-type sniffing (mimetype's
// default read limit).
const sniffLen = 3 << 10

// copyBufSize is the buffer of the intake copy loop: big enough for few syscalls,
// small enough for many concurrent intakes.
const copyBufSize = 256 << 10

// staged is a file durably in tmp/, not yet installed or committed.
type staged struct {
	tmp          string
	size         int64
	sha256, sha1 string
	head         []byte
}

// sidecar is the self-description written beside each item's content as <id>.json:
// everything needed to put the row back as it was received. It is what the intake
// knew before its transaction; what dedupe decides inside it (duplicate_of, corrects,
// control_id_reused) is decided again by recovery.
type sidecar struct {
	Version      int               `json:"v"`
	ID           string            `json:"id"`
	Source       string            `json:"source"`
	SourceKind   string            `json:"source_kind,omitempty"`
	SourceRef    string            `json:"source_ref,omitempty"` // (private) like the row's
	Filename     string            `json:"filename,omitempty"`   // (private) like the row's
	Size         int64             `json:"size"`
	SHA256       string            `json:"sha256"`
	SHA1         string            `json:"sha1"`
	ContentType  string            `json:"content_type,omitempty"`
	Priority     Priority          `json:"priority"`
	ReceivedAt   time.Time         `json:"received_at"`
	Meta         map[string]string `json:"meta,omitempty"`
	Fingerprint  string            `json:"fingerprint,omitempty"`
	DedupeKey    string            `json:"dedupe_key,omitempty"`
	ContentKey   string            `json:"content_key,omitempty"`
	OrderKey     string            `json:"order_key,omitempty"`
	IsCorrection bool              `json:"is_correction,omitempty"`
	Envelope     json.RawMessage   `json:"envelope,omitempty"` // the inspector's data, before merging
}

const sidecarVersion = 1

// sidecarExt ends the name of a sidecar in content/; ids are UUIDs, so no content
// file ends with it.
const sidecarExt = ".json"

func (s *Spool) sidecarPath(id string) string { return s.ContentPath(id) + sidecarExt }

// stageStream writes r to tmp/<id>, hashing as it goes, and fsyncs it. sizeHint is
// the expected size (-1: unknown): a small file gets a small copy buffer, so many
// concurrent small intakes stay small in memory.
func (s *Spool) stageStream(ctx context.Context, id string, maxSize, allowed, sizeHint int64, r io.Reader) (st staged, err error) {
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
	bufSize := copyBufSize
	if sizeHint >= 0 && sizeHint < copyBufSize {
		bufSize = max(int(sizeHint)+1, 4<<10)
	}
	n, err := io.CopyBuffer(w, src, make([]byte, bufSize))
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
	st = h.staged(n)
	st.tmp = tmp
	return st, nil
}

// install writes the sidecar and renames it and the staged bytes into content/. It
// returns the shard folder whose fsync makes the renames durable: the caller does that
// before the row is committed (once per group commit, see group.go). On error nothing
// of the item is left in content/.
func (s *Spool) install(id string, st staged, sc *sidecar) (shard string, err error) {
	scTmp := st.tmp + sidecarExt
	defer func() {
		if err != nil {
			os.Remove(st.tmp)
			os.Remove(scTmp)
			if isNoSpace(err) && !errors.Is(err, ErrFull) {
				err = fmt.Errorf("%w: %w", ErrFull, err)
			}
		}
	}()
	if err := writeSidecar(scTmp, sc); err != nil {
		return "", err
	}
	final := s.ContentPath(id)
	shard = filepath.Dir(final)
	if _, err := os.Stat(shard); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(shard, 0o750); err != nil {
			return "", fmt.Errorf("create content folder: %w", err)
		}
		if err := syncDir(s.contentDir()); err != nil {
			return "", fmt.Errorf("fsync content folder: %w", err)
		}
	}
	// The description first: content without one could not be recovered.
	if err := os.Rename(scTmp, final+sidecarExt); err != nil {
		return "", fmt.Errorf("move description into content: %w", err)
	}
	if err := os.Rename(st.tmp, final); err != nil {
		os.Remove(final + sidecarExt)
		return "", fmt.Errorf("move into content: %w", err)
	}
	return shard, nil
}

func writeSidecar(path string, sc *sidecar) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return fmt.Errorf("describe item: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("create description: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write description: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync description: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close description: %w", err)
	}
	return nil
}

func readSidecar(path string) (*sidecar, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sc sidecar
	if err := json.Unmarshal(b, &sc); err != nil {
		return nil, fmt.Errorf("description %s: %w", filepath.Base(path), err)
	}
	if sc.ID == "" || sc.SHA256 == "" {
		return nil, fmt.Errorf("description %s: no id or digest", filepath.Base(path))
	}
	return &sc, nil
}

// removeContent deletes the item's bytes, then its description. The removal is not
// fsynced: every caller's row already says (or, uncommitted, never said) that the
// bytes are not needed, so if a power cut brings them back, recovery removes them
// again, and a description left alone describes nothing and goes too. That keeps
// finishing a batch of items at two unlinks each instead of a folder fsync each.
func (s *Spool) removeContent(id string) error {
	p := s.ContentPath(id)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Remove(p + sidecarExt); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
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
		return 0, fmt.Errorf("max_bytes or the disk floor reached while writing: %w", ErrFull)
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
