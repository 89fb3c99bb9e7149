package ingest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// holdBody reads and checks a chunk that carries Upload-Checksum and puts
// the checked bytes back as the request body. It returns false when it
// answered the request itself.
func (s *Server) holdBody(w http.ResponseWriter, r *http.Request) (io.Closer, bool) {
	if r.ContentLength > s.opts.MaxChunkSize {
		tusError(w, http.StatusRequestEntityTooLarge, "ERR_CHUNK_TOO_LARGE",
			fmt.Sprintf("chunk of %d bytes is larger than the %d bytes this server accepts in one request", r.ContentLength, s.opts.MaxChunkSize))
		return nil, false
	}
	header := r.Header.Get("Upload-Checksum")
	if header == "" {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxChunkSize)
		}
		return nil, true
	}
	sum, err := parseUploadChecksum(header)
	if err != nil {
		tusError(w, http.StatusBadRequest, "ERR_INVALID_CHECKSUM_HEADER", err.Error())
		return nil, false
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	held, err := holdChunk(r.Body, sum, s.opts.MaxChunkSize, s.opts.TempDir)
	switch {
	case errors.Is(err, errChunkMismatch):
		s.metrics.mismatch.WithLabelValues("chunk").Inc()
		s.log.Info("chunk checksum mismatch; chunk discarded", "path", r.URL.Path, "algorithm", sum.alg, "offset", r.Header.Get("Upload-Offset"))
		tusError(w, StatusChecksumMismatch, "ERR_CHECKSUM_MISMATCH", "the chunk's "+sum.alg+" does not match Upload-Checksum; it was discarded, send it again")
		return nil, false
	case errors.Is(err, errChunkTooLarge):
		tusError(w, http.StatusRequestEntityTooLarge, "ERR_CHUNK_TOO_LARGE",
			fmt.Sprintf("chunk is larger than the %d bytes this server accepts in one request", s.opts.MaxChunkSize))
		return nil, false
	case err != nil:
		// The client went away or the temp dir failed: nothing was written.
		s.log.Warn("chunk not received", "path", r.URL.Path, "err", err)
		tusError(w, http.StatusBadRequest, "ERR_READ_CHUNK", err.Error())
		return nil, false
	}
	r.Body = io.NopCloser(held)
	r.ContentLength = held.size
	r.Header.Set("Content-Length", strconv.FormatInt(held.size, 10))
	return held, true
}
