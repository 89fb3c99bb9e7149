package ingest

import (
	"context"
	"time"
)

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
	ids, err := s.backend.abandoned(ctx, time.Now().Add(-s.opts.ExpireAfter))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		up, err := s.store.GetUpload(ctx, id)
		if err != nil {
			continue
		}
		if err := s.store.AsTerminatableUpload(up).Terminate(ctx); err != nil {
			s.log.Warn("removing abandoned upload failed", "id", id, "err", err)
			continue
		}
		if err := s.backend.purge(ctx, id); err != nil {
			s.log.Warn("removing leftovers of abandoned upload failed", "id", id, "err", err)
		}
		n++
		s.metrics.expired.Inc()
		s.log.Info("abandoned upload removed", "id", id, "untouched_for", s.opts.ExpireAfter.String())
	}
	return n, nil
}
