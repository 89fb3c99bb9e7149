package ingest

import (
	"errors"
	"fmt"
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

// owns answers 403 unless who may touch upload id. Unknown ids pass: tusd
// answers 404 for them.
func (s *Server) owns(w http.ResponseWriter, r *http.Request, id, who string) bool {
	if !s.authRequired() {
		return true
	}
	owner, ok := s.owners.Load(id)
	if !ok {
		up, err := s.store.GetUpload(r.Context(), id)
		if err != nil {
			return !s.notFoundOr503(w, id, err) // unknown ids pass: tusd answers 404
		}
		info, err := up.GetInfo(r.Context())
		if err != nil {
			return !s.notFoundOr503(w, id, err)
		}
		owner = info.MetaData["agent"]
		if info.SizeIsDeferred || info.Offset < info.Size {
			// Only uploads in progress are remembered: finished ones are looked up
			// again, so the map does not grow with every file ever stored.
			s.owners.Store(id, owner)
		}
	}
	if owner != who {
		s.metrics.authFailures.Inc()
		s.log.Warn("upload of another agent refused", "id", id, "identity", who)
		tusError(w, http.StatusForbidden, "ERR_FORBIDDEN", fmt.Sprintf("upload %s does not belong to agent %q", id, who))
		return false
	}
	return true
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
