package ingest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
)

// uploadLocks is tusd's in-memory locker, counting which uploads a request
// holds so the janitor never interrupts one in progress.
type uploadLocks struct {
	inner *memorylocker.MemoryLocker
	mu    sync.Mutex
	held  map[string]int
}

func newUploadLocks() *uploadLocks {
	return &uploadLocks{inner: memorylocker.New(), held: map[string]int{}}
}

func (l *uploadLocks) NewLock(id string) (handler.Lock, error) {
	inner, err := l.inner.NewLock(id)
	if err != nil {
		return nil, err
	}
	return &countedLock{inner: inner, id: id, l: l}, nil
}

func (l *uploadLocks) busy(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[id] > 0
}

type countedLock struct {
	inner handler.Lock
	id    string
	l     *uploadLocks
}

func (c *countedLock) Lock(ctx context.Context, requestRelease func()) error {
	if err := c.inner.Lock(ctx, requestRelease); err != nil {
		return err
	}
	c.l.mu.Lock()
	c.l.held[c.id]++
	c.l.mu.Unlock()
	return nil
}

func (c *countedLock) Unlock() error {
	c.l.mu.Lock()
	if c.l.held[c.id]--; c.l.held[c.id] <= 0 {
		delete(c.l.held, c.id)
	}
	c.l.mu.Unlock()
	return c.inner.Unlock()
}

// janitor removes abandoned uploads: tusd has no expiration of its own.
func (s *Server) janitor(ctx context.Context) {
	every := s.opts.ExpireAfter / 4
	every = min(max(every, 200*time.Millisecond), time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Expire(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("expiring abandoned uploads failed", "err", err)
		}
	}
}

// Expire removes incomplete uploads untouched for ExpireAfter now and
// returns how many it removed. The janitor calls it periodically.
func (s *Server) Expire(ctx context.Context) (int, error) {
	if s.opts.ExpireAfter <= 0 {
		return 0, nil
	}
	cutoff := time.Now().Add(-s.opts.ExpireAfter)
	ids, err := s.backend.abandoned(ctx, cutoff)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		removed, err := s.expireOne(ctx, id, cutoff)
		if err != nil {
			s.log.Warn("removing abandoned upload failed", "id", id, "err", err)
			continue
		}
		if removed {
			n++
			s.metrics.expired.Inc()
			s.log.Info("abandoned upload removed", "id", id, "untouched_for", s.opts.ExpireAfter.String())
		}
	}
	return n, nil
}

// expireOne removes upload id under its tusd lock, after checking again
// that it is still incomplete and untouched: an agent may have resumed it
// since the scan.
func (s *Server) expireOne(ctx context.Context, id string, cutoff time.Time) (bool, error) {
	if s.locks.busy(id) {
		return false, nil
	}
	if _, err := s.store.GetUpload(ctx, id); errors.Is(err, errTornInfo) {
		return s.expireTorn(ctx, id, cutoff)
	}
	lock, err := s.locks.NewLock(id)
	if err != nil {
		return false, err
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := lock.Lock(lctx, func() {}); err != nil {
		return false, nil
	}
	defer lock.Unlock()
	touched, err := s.backend.lastTouched(ctx, id)
	if err != nil || !touched.Before(cutoff) {
		return false, nil
	}
	up, err := s.store.GetUpload(ctx, id)
	if err != nil {
		return false, nil
	}
	info, err := up.GetInfo(ctx)
	if err != nil || (!info.SizeIsDeferred && info.Offset == info.Size) {
		return false, nil
	}
	if err := (terminator{u: up.(*trackedUpload), reason: "expired: untouched for " + s.opts.ExpireAfter.String()}).Terminate(ctx); err != nil {
		return false, err
	}
	if err := s.backend.purge(ctx, id); err != nil {
		s.log.Warn("removing leftovers of abandoned upload failed", "id", id, "err", err)
	}
	return true, nil
}

// expireTorn discards an upload whose .info is torn once it is untouched
// since cutoff, under the courier-id's create lock (a POST would discard it
// too; PATCH and HEAD of it get 404 and write nothing).
func (s *Server) expireTorn(ctx context.Context, id string, cutoff time.Time) (bool, error) {
	unlock := s.creates.lock(id)
	defer unlock()
	if _, err := s.store.GetUpload(ctx, id); !errors.Is(err, errTornInfo) {
		return false, nil
	}
	if touched, err := s.backend.lastTouched(ctx, id); err != nil || !touched.Before(cutoff) {
		return false, nil
	}
	if err := s.discardTorn(ctx, id); err != nil {
		return false, err
	}
	return true, nil
}
