package ingest

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for holding checksummed chunks.
const (
	// DefaultMaxChunkSize caps one checksummed chunk.
	DefaultMaxChunkSize = 64 << 20
	// DefaultChunkMemory is how much of one checksummed chunk is held in
	// memory (the agent's default chunk_size of 8 MiB fits); the rest spills
	// to a temporary file.
	DefaultChunkMemory = 16 << 20
	// DefaultHeldMemory and DefaultHeldDisk bound what all checksummed chunks
	// together hold while they are checked.
	DefaultHeldMemory = 256 << 20
	DefaultHeldDisk   = 4 << 30
	// busyRetryAfter is the Retry-After of a chunk refused for want of room.
	busyRetryAfter = "5"
	// growStep is how a chunk of unknown length (chunked transfer encoding)
	// takes room from the budget as it arrives.
	growStep = 1 << 20
)

var (
	errChunkBusy = errors.New("no room to hold the chunk")
	errHoldIO    = errors.New("hold chunk")
)

// holdBudget is the memory and temporary disk all held chunks share.
type holdBudget struct {
	mu        sync.Mutex
	memMax    int64
	diskMax   int64
	mem, disk int64
	gauge     *prometheus.GaugeVec
}

func (b *holdBudget) take(mem, disk int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mem+mem > b.memMax || b.disk+disk > b.diskMax {
		return false
	}
	b.mem += mem
	b.disk += disk
	b.publish()
	return true
}

func (b *holdBudget) give(mem, disk int64) {
	b.mu.Lock()
	b.mem -= mem
	b.disk -= disk
	b.publish()
	b.mu.Unlock()
}

func (b *holdBudget) publish() {
	b.gauge.WithLabelValues("memory").Set(float64(b.mem))
	b.gauge.WithLabelValues("disk").Set(float64(b.disk))
}

// held returns the memory and disk held right now.
func (b *holdBudget) held() (mem, disk int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mem, b.disk
}

// holdRequest is what holdChunk reads and where it may keep it.
type holdRequest struct {
	body     io.Reader
	length   int64 // Content-Length; -1 when unknown
	sum      chunkChecksum
	limit    int64 // largest chunk
	memLimit int64 // held in memory, the rest in a temp file
	tempDir  string
	budget   *holdBudget
	// whole is the upload's running SHA-256 at the chunk's offset, or nil: it
	// is extended in the same pass that checks the chunk.
	whole hash.Hash
}

// heldChunk is a request body read completely and checked before tusd sees
// it: its first part in memory, the rest (if any) in an unlinked temp file.
type heldChunk struct {
	mem  []byte
	file *os.File
	// leftover is the temp file's name when it could not be unlinked while
	// open (Windows): Close removes it.
	leftover  string
	size      int64
	rd        io.Reader
	budget    *holdBudget
	memTaken  int64
	diskTaken int64
	// digest is set when the whole-file SHA-256 was extended while holding.
	digest *heldDigest
}

// heldDigest is the running whole-file digest before and after the chunk.
type heldDigest struct {
	offset int64
	base   []byte // sha256 state at offset
	after  []byte // sha256 state at offset+size
}

func (c *heldChunk) take(mem, disk int64) bool {
	if !c.budget.take(mem, disk) {
		return false
	}
	c.memTaken += mem
	c.diskTaken += disk
	return true
}

// holdChunk reads the body (at most q.limit bytes) while hashing it, and
// returns the bytes if they match q.sum. On mismatch or error nothing is
// kept and the budget is given back.
func holdChunk(q holdRequest) (held *heldChunk, err error) {
	h, _ := newChecksumHash(q.sum.alg)
	var hw io.Writer = h
	if q.whole != nil {
		hw = io.MultiWriter(h, q.whole)
	}
	c := &heldChunk{budget: q.budget}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if q.length > q.limit {
		return nil, errChunkTooLarge
	}
	memCap := q.memLimit
	if q.length >= 0 {
		memCap = min(q.length, q.memLimit)
		if !c.take(memCap, q.length-memCap) {
			return nil, errChunkBusy
		}
		c.mem = make([]byte, memCap)
	}
	eof := false
	for !eof && c.size < memCap {
		if c.size == int64(len(c.mem)) { // unknown length: grow
			step := min(growStep, memCap-c.size)
			if !c.take(step, 0) {
				return nil, errChunkBusy
			}
			c.mem = append(c.mem, make([]byte, step)...)
		}
		n, rerr := q.body.Read(c.mem[c.size:])
		hw.Write(c.mem[c.size : c.size+int64(n)])
		c.size += int64(n)
		if rerr == io.EOF {
			eof = true
		} else if rerr != nil {
			return nil, fmt.Errorf("read chunk: %w", rerr)
		}
	}
	c.mem = c.mem[:c.size]
	if q.length >= 0 && c.size < q.length && eof {
		return nil, fmt.Errorf("read chunk: %w", io.ErrUnexpectedEOF)
	}
	if !eof && (q.length < 0 || c.size < q.length) {
		if err := c.spill(q, hw); err != nil {
			return nil, err
		}
	}
	if !bytes.Equal(h.Sum(nil), q.sum.want) {
		return nil, errChunkMismatch
	}
	readers := []io.Reader{bytes.NewReader(c.mem)}
	if c.file != nil {
		if _, err := c.file.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("%w: %w", errHoldIO, err)
		}
		readers = append(readers, c.file)
	}
	c.rd = io.MultiReader(readers...)
	return c, nil
}

// spill reads the rest of the body into an unlinked temporary file.
func (c *heldChunk) spill(q holdRequest, hw io.Writer) error {
	f, err := os.CreateTemp(q.tempDir, "courier-chunk-*")
	if err != nil {
		return fmt.Errorf("%w: %w", errHoldIO, err)
	}
	// Unlinked at once: the open descriptor keeps the bytes, and a crash
	// leaves nothing behind.
	if os.Remove(f.Name()) != nil {
		c.leftover = f.Name()
	}
	c.file = f
	buf := make([]byte, 256<<10)
	var onDisk int64
	for {
		n, rerr := q.body.Read(buf)
		if n > 0 {
			if c.size+int64(n) > q.limit {
				return errChunkTooLarge
			}
			for q.length < 0 && onDisk+int64(n) > c.diskTaken {
				if !c.take(0, growStep) {
					return errChunkBusy
				}
			}
			hw.Write(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				return fmt.Errorf("%w: %w", errHoldIO, err)
			}
			c.size += int64(n)
			onDisk += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read chunk: %w", rerr)
		}
		if q.length >= 0 && c.size >= q.length {
			break
		}
	}
	if q.length >= 0 && c.size < q.length {
		return fmt.Errorf("read chunk: %w", io.ErrUnexpectedEOF)
	}
	return nil
}

func (c *heldChunk) Read(p []byte) (int, error) { return c.rd.Read(p) }

// stateAt returns the whole-file SHA-256 state after the chunk's first n
// bytes (a store that kept only part of the chunk).
func (c *heldChunk) stateAt(n int64) ([]byte, error) {
	if n == c.size {
		return c.digest.after, nil
	}
	h, err := (&digestState{State: c.digest.base}).hash()
	if err != nil {
		return nil, err
	}
	m := min(n, int64(len(c.mem)))
	h.Write(c.mem[:m])
	if n > m {
		if c.file == nil {
			return nil, errors.New("held chunk shorter than what was stored")
		}
		if _, err := io.Copy(h, io.NewSectionReader(c.file, 0, n-m)); err != nil {
			return nil, err
		}
	}
	return h.(encoding.BinaryMarshaler).MarshalBinary()
}

func (c *heldChunk) Close() error {
	var err error
	if c.file != nil {
		err = c.file.Close()
		c.file = nil
		if c.leftover != "" {
			_ = os.Remove(c.leftover)
		}
	}
	c.mem = nil
	if c.budget != nil && (c.memTaken != 0 || c.diskTaken != 0) {
		c.budget.give(c.memTaken, c.diskTaken)
		c.memTaken, c.diskTaken = 0, 0
	}
	return err
}

type heldKey struct{}

// heldFrom returns the held chunk a request carries, if any.
func heldFrom(ctx context.Context) *heldChunk {
	c, _ := ctx.Value(heldKey{}).(*heldChunk)
	return c
}

// holdBody reads and checks a chunk that carries Upload-Checksum and puts
// the checked bytes back as the request body (and in its context, for the
// digest). A body without Upload-Checksum is left to stream into the store.
// It returns false when it answered the request itself; else the caller
// closes the returned chunk (nil when nothing is held) after tusd is done.
func (s *Server) holdBody(w http.ResponseWriter, r *http.Request, id string, creating bool) (*http.Request, *heldChunk, bool) {
	header := r.Header.Get("Upload-Checksum")
	if header == "" {
		return r, nil, true
	}
	offset, _ := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	sum, err := parseUploadChecksum(header)
	if err != nil {
		s.audit(r.Context(), "chunk_refused", slog.String("id", id), slog.Int64("offset", offset), slog.String("reason", "malformed Upload-Checksum"))
		tusError(w, http.StatusBadRequest, "ERR_INVALID_CHECKSUM_HEADER", err.Error())
		return r, nil, false
	}
	if r.ContentLength > s.opts.MaxChunkSize {
		s.chunkTooLarge(w, r, id, offset, r.ContentLength)
		return r, nil, false
	}
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	q := holdRequest{body: body, length: r.ContentLength, sum: sum, limit: s.opts.MaxChunkSize,
		memLimit: s.opts.ChunkMemory, tempDir: s.opts.TempDir, budget: s.budget}
	var digest *heldDigest
	if creating { // creation-with-upload: the upload starts at 0
		st := freshDigest()
		digest = &heldDigest{base: st.State}
		q.whole, _ = st.hash()
	} else if st, err := s.digests.load(r.Context(), id, false); err == nil && st != nil && !st.Lost && st.Offset == offset {
		if h, err := st.hash(); err == nil {
			digest = &heldDigest{offset: offset, base: st.State}
			q.whole = h
		}
	}
	held, err := holdChunk(q)
	refused := func(reason string) {
		s.audit(r.Context(), "chunk_refused", slog.String("id", id), slog.Int64("offset", offset), slog.Int64("size", max(r.ContentLength, 0)), slog.String("reason", reason))
	}
	var slow errBodyTooSlow
	switch {
	case errors.Is(err, errChunkMismatch):
		s.metrics.mismatch.WithLabelValues("chunk").Inc()
		refused(sum.alg + " mismatch")
		tusError(w, StatusChecksumMismatch, "ERR_CHECKSUM_MISMATCH", "the chunk's "+sum.alg+" does not match Upload-Checksum; it was discarded, send it again")
		return r, nil, false
	case errors.Is(err, errChunkTooLarge):
		s.chunkTooLarge(w, r, id, offset, -1)
		return r, nil, false
	case errors.Is(err, errChunkBusy):
		s.metrics.heldRefused.Inc()
		refused("no room to hold the chunk")
		w.Header().Set("Retry-After", busyRetryAfter)
		tusError(w, http.StatusServiceUnavailable, "ERR_SERVER_BUSY",
			"the server holds as many checksummed chunks as it may right now; nothing was written, send this chunk again after Retry-After seconds")
		return r, nil, false
	case errors.As(err, &slow):
		refused(slow.msg)
		tusError(w, http.StatusRequestTimeout, "ERR_READ_TIMEOUT", slow.msg+"; nothing was written")
		return r, nil, false
	case errors.Is(err, errHoldIO):
		if isNoSpace(err) {
			refused("no space for the temporary file")
			s.storeFull(w, "no space left to hold the chunk")
			return r, nil, false
		}
		s.log.Error("chunk not held", "id", id, "err", err)
		refused("temporary file failed")
		tusError(w, http.StatusInternalServerError, "ERR_INTERNAL_SERVER_ERROR", "the chunk could not be held; nothing was written, send it again")
		return r, nil, false
	case err != nil:
		// The client went away: nothing was written.
		refused("body not received")
		s.log.Info("chunk not received", "id", id, "err", err)
		tusError(w, http.StatusBadRequest, "ERR_READ_CHUNK", err.Error())
		return r, nil, false
	}
	if digest != nil && q.whole != nil {
		digest.after, _ = q.whole.(encoding.BinaryMarshaler).MarshalBinary()
		held.digest = digest
	}
	r = r.WithContext(context.WithValue(r.Context(), heldKey{}, held))
	r.Body = io.NopCloser(held)
	r.ContentLength = held.size
	r.Header.Set("Content-Length", strconv.FormatInt(held.size, 10))
	return r, held, true
}

func (s *Server) chunkTooLarge(w http.ResponseWriter, r *http.Request, id string, offset, size int64) {
	s.audit(r.Context(), "chunk_refused", slog.String("id", id), slog.Int64("offset", offset), slog.Int64("size", max(size, 0)),
		slog.String("reason", "checksummed chunk larger than "+strconv.FormatInt(s.opts.MaxChunkSize, 10)))
	what := "chunk"
	if size >= 0 {
		what = fmt.Sprintf("chunk of %d bytes", size)
	}
	tusError(w, http.StatusRequestEntityTooLarge, "ERR_CHUNK_TOO_LARGE",
		fmt.Sprintf("%s with Upload-Checksum is larger than the %d bytes (max chunk size) this server holds to check in one request; send smaller chunks, or send without Upload-Checksum to stream it", what, s.opts.MaxChunkSize))
}
