package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sync"

	"github.com/tus/tusd/v2/pkg/handler"
)

// digestState is the running whole-file SHA-256 of one upload, persisted
// beside it after every accepted chunk so a restarted ingest carries on
// without reading the stored bytes again.
type digestState struct {
	// Offset is how many bytes of the upload State covers.
	Offset int64 `json:"offset"`
	// State is crypto/sha256's MarshalBinary output.
	State []byte `json:"state,omitempty"`
	// Lost means the running digest no longer matches the stored bytes
	// (a crash between a write and its state, a partial write): the digest
	// is computed from the stored object when the upload completes.
	Lost bool `json:"lost,omitempty"`
	// Verified is the hex digest once it was compared with the sha256
	// metadata and found equal.
	Verified string `json:"verified,omitempty"`
}

func freshDigest() *digestState {
	st, _ := sha256.New().(encoding.BinaryMarshaler).MarshalBinary()
	return &digestState{State: st}
}

func (d *digestState) hash() (hash.Hash, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(d.State); err != nil {
		return nil, err
	}
	return h, nil
}

// digests caches digest states in memory in front of the backend.
type digests struct {
	b  backend
	mu sync.Mutex
	m  map[string]*digestState
}

func (d *digests) load(ctx context.Context, id string, fresh bool) (*digestState, error) {
	if !fresh {
		d.mu.Lock()
		st, ok := d.m[id]
		d.mu.Unlock()
		if ok {
			cp := *st
			return &cp, nil
		}
	}
	data, err := d.b.loadState(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load digest state of %s: %w", id, err)
	}
	if data == nil {
		return nil, nil
	}
	var st digestState
	if err := json.Unmarshal(data, &st); err != nil {
		// A torn state file is as good as none: the digest falls back.
		return &digestState{Lost: true}, nil
	}
	d.mu.Lock()
	d.m[id] = &st
	d.mu.Unlock()
	cp := st
	return &cp, nil
}

func (d *digests) save(ctx context.Context, id string, st *digestState) error {
	cp := *st
	d.mu.Lock()
	d.m[id] = &cp
	d.mu.Unlock()
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := d.b.saveState(ctx, id, data); err != nil {
		return fmt.Errorf("save digest state of %s: %w", id, err)
	}
	return nil
}

// evict drops id from memory only (the persisted state stays).
func (d *digests) evict(id string) {
	d.mu.Lock()
	delete(d.m, id)
	d.mu.Unlock()
}

func (d *digests) forget(ctx context.Context, id string) error {
	d.mu.Lock()
	delete(d.m, id)
	d.mu.Unlock()
	return d.b.deleteState(ctx, id)
}

// trackedStore wraps the backend's tusd store so every byte that reaches
// the store also reaches the running digest, whichever request carried it
// (PATCH or creation-with-upload).
type trackedStore struct {
	s *Server
}

func (t trackedStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	up, err := t.s.backend.store().NewUpload(ctx, info)
	if err != nil {
		if info.ID != "" {
			// A create cut short (a full disk) must not leave a torn .info behind
			// that every later POST of this courier-id would stumble over.
			if derr := t.s.backend.discard(context.WithoutCancel(ctx), info.ID); derr != nil {
				t.s.log.Warn("remains of a failed create not removed", "id", info.ID, "err", derr)
			}
		}
		t.s.audit(ctx, "create_failed", slog.String("id", info.ID), slog.Int64("size", info.Size), slog.String("reason", storeErrReason(err)))
		return nil, t.s.storeErr(err)
	}
	created, err := up.GetInfo(ctx)
	if err != nil {
		return nil, err
	}
	if err := t.s.digests.save(ctx, created.ID, freshDigest()); err != nil {
		t.s.log.Warn("digest state not saved; it will be recomputed at completion", "id", created.ID, "err", err)
	}
	t.s.audit(ctx, "create", slog.String("id", created.ID), slog.Int64("size", created.Size))
	return &trackedUpload{Upload: up, id: created.ID, s: t.s}, nil
}

func (t trackedStore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	up, err := t.s.backend.store().GetUpload(ctx, id)
	if err != nil {
		if isJSONError(err) {
			return nil, tornError{id: id, err: err}
		}
		return nil, err
	}
	return &trackedUpload{Upload: up, id: id, s: t.s}, nil
}

func (t trackedStore) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	tu := up.(*trackedUpload)
	return terminator{u: tu, reason: "terminated by its owner"}
}

// terminator removes an upload with its digest state. The write-once rule
// (a verified upload is never terminated by a client) is checked before, in
// preTerminate, under tusd's lock.
type terminator struct {
	u      *trackedUpload
	reason string
}

func (t terminator) Terminate(ctx context.Context) error {
	if err := t.u.s.backend.terminater().AsTerminatableUpload(t.u.Upload).Terminate(ctx); err != nil {
		return err
	}
	t.u.s.owners.Delete(t.u.id)
	if err := t.u.s.digests.forget(ctx, t.u.id); err != nil {
		t.u.s.log.Warn("digest state of terminated upload not removed", "id", t.u.id, "err", err)
	}
	t.u.s.audit(ctx, "terminate", slog.String("id", t.u.id), slog.String("reason", t.reason))
	return nil
}

type trackedUpload struct {
	handler.Upload
	id string
	s  *Server
}

// countingHash hashes what the store reads and counts it, so a store that
// read more than it kept is noticed.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (u *trackedUpload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	d := u.s.digests
	st, err := d.load(ctx, u.id, false)
	if err == nil && st != nil && !st.Lost && st.Offset != offset {
		// Another instance may have moved on; read the persisted state.
		st, err = d.load(ctx, u.id, true)
	}
	if err != nil {
		u.s.log.Warn("digest state unreadable; it will be recomputed at completion", "id", u.id, "err", err)
		st = nil
	}
	if st == nil {
		if offset == 0 {
			st = freshDigest()
		} else {
			st = &digestState{Lost: true}
		}
	}
	if !st.Lost && st.Offset < offset {
		// A crash in the middle of a chunk's write leaves bytes the state has not
		// seen (the offset is the stored size); hash just that gap from the store.
		if caught, err := u.catchUp(ctx, st, offset); err == nil {
			st = caught
		} else {
			u.s.log.Info("digest state behind the upload and the gap is not readable; it will be recomputed at completion",
				"id", u.id, "state_offset", st.Offset, "offset", offset, "err", err)
		}
	}
	held := heldFrom(ctx)
	if held != nil && (held.digest == nil || held.digest.offset != offset || st.Lost || st.Offset != offset ||
		!bytes.Equal(st.State, held.digest.base)) {
		held = nil // the digest moved on since the chunk was held: hash it again here
	}
	var ch *countingHash
	if held == nil && !st.Lost && st.Offset == offset {
		if h, err := st.hash(); err == nil {
			ch = &countingHash{h: h}
			src = io.TeeReader(src, ch)
		}
	}
	n, werr := u.Upload.WriteChunk(ctx, offset, src)
	u.s.metrics.bytes.Add(float64(n))
	next := &digestState{Offset: offset + n}
	switch {
	case held != nil:
		// Extended while the chunk was checked: no second pass over its bytes.
		if state, err := held.stateAt(n); err == nil {
			next.State = state
		} else {
			next.Lost = true
		}
	case ch != nil && ch.n == n:
		next.State, _ = ch.h.(encoding.BinaryMarshaler).MarshalBinary()
	default:
		next.Lost = true
	}
	if n > 0 || next.Lost != st.Lost {
		// The context may already be cancelled (client gone); the state
		// must still be written or the next chunk falls back.
		if err := d.save(context.WithoutCancel(ctx), u.id, next); err != nil {
			u.s.log.Warn("digest state not saved; it will be recomputed at completion", "id", u.id, "err", err)
		}
	}
	if n > 0 || werr != nil {
		attrs := []slog.Attr{slog.String("id", u.id), slog.Int64("offset", offset), slog.Int64("size", n)}
		if werr != nil {
			attrs = append(attrs, slog.String("reason", storeErrReason(werr)))
		}
		u.s.audit(ctx, "chunk", attrs...)
	}
	return n, u.s.storeErr(werr)
}

// catchUp hashes the stored bytes [st.Offset, offset) on top of st. Only stores
// whose reader can seek (the file store) can do this for an unfinished upload.
func (u *trackedUpload) catchUp(ctx context.Context, st *digestState, offset int64) (*digestState, error) {
	h, err := st.hash()
	if err != nil {
		return nil, err
	}
	rd, err := u.Upload.GetReader(ctx)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	seeker, ok := rd.(io.Seeker)
	if !ok {
		return nil, errors.New("store reader cannot seek")
	}
	if _, err := seeker.Seek(st.Offset, io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := io.CopyN(h, rd, offset-st.Offset); err != nil {
		return nil, err
	}
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	u.s.metrics.catchUp.Inc()
	return &digestState{Offset: offset, State: state}, nil
}

var _ handler.DataStore = trackedStore{}
