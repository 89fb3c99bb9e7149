package ingest

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// readyCacheFor is how long a successful /readyz probe of the store is
// reused, so a busy prober does not write to the store on every request.
// A failed probe is not reused: the next request probes again.
const readyCacheFor = time.Second

// readiness caches the last probe of the store.
type readiness struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

// ready probes the store (at most once per readyCacheFor) and returns why
// it cannot take writes, or nil.
func (s *Server) ready(ctx context.Context) error {
	rd := &s.readiness
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.err == nil && !rd.at.IsZero() && time.Since(rd.at) < readyCacheFor {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rd.err = s.backend.ready(pctx)
	rd.at = time.Now()
	return rd.err
}

// serveReady answers /readyz: 200 when the store takes writes, 503 naming
// the problem when it does not (full, read-only, unreachable).
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.ready(r.Context()); err != nil {
		reason := "store unusable: " + err.Error()
		if isNoSpace(err) {
			reason = "store full: " + err.Error()
		}
		w.Header().Set("Retry-After", "10")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, reason+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}
