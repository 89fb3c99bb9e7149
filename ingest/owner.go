package ingest

import (
	"errors"
	"net/http"
	"os"
	"sync"

	"github.com/tus/tusd/v2/pkg/handler"
)

// notFoundOr503 reports whether err means the upload does not exist. Any other
// store error is answered 503 here (the client retries): it must not be taken for
// "unknown upload", which would skip the owner check or start the upload anew.
func (s *Server) notFoundOr503(w http.ResponseWriter, id string, err error) bool {
	var he handler.Error
	if errors.Is(err, os.ErrNotExist) || (errors.As(err, &he) && he.ErrorCode == handler.ErrNotFound.ErrorCode) {
		return true
	}
	s.log.Warn("store error looking up an upload; asking the client to retry", "id", id, "err", err)
	tusError(w, http.StatusServiceUnavailable, "ERR_STORE_UNAVAILABLE", "the upload could not be looked up, try again")
	return false
}

// notYours is an upload id that never exists: a request for someone else's
// upload is answered as one for this id, so it gets tusd's own 404, exactly
// what a missing upload gets.
const notYours = "not-an-upload"

// owns reports whether the request may go on to tusd as it is. Without
// authentication every request may. A missing upload goes on (tusd answers
// 404) but is not held (missing = true); someone else's upload is answered
// as a missing one — 404, indistinguishable — and counted as an auth
// failure. A store error is answered 503 here (ok = false).
func (s *Server) owns(w http.ResponseWriter, r *http.Request, id, who string) (ok, missing bool) {
	if !s.authRequired() {
		return true, false
	}
	owner, cached := s.owners.Load(id)
	if !cached {
		up, err := s.store.GetUpload(r.Context(), id)
		if err != nil {
			if s.notFoundOr503(w, id, err) {
				return true, true
			}
			return false, false
		}
		info, err := up.GetInfo(r.Context())
		if err != nil {
			if s.notFoundOr503(w, id, err) {
				return true, true
			}
			return false, false
		}
		owner = info.MetaData["agent"]
		if info.SizeIsDeferred || info.Offset < info.Size {
			// Only uploads in progress are remembered: finished ones are looked up
			// again, so the map does not grow with every file ever stored.
			s.owners.Store(id, owner)
		}
	}
	if owner != who {
		s.authFailure(r.Context(), who, r.RemoteAddr, id, r.Method+": upload of another agent")
		return true, true
	}
	return true, false
}

// asMissing rewrites r to ask tusd for an upload that does not exist.
func asMissing(r *http.Request) *http.Request {
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + notYours
	r2.URL.RawPath = ""
	return r2
}

// keyedMutex serialises creation per courier-id so two POSTs for one item
// cannot make two objects.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
