package events

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// FileSink appends one JSON line per event to a file and fsyncs it before
// Publish returns. A crash between the write and the outbox update repeats a
// line with the same id: consumers drop ids they have seen.
type FileSink struct {
	mu   sync.Mutex
	path string
	f    *os.File
	tee  io.Writer // optional copy, e.g. stdout for `courier dev`
}

// OpenFile opens (creating) the events file for appending.
func OpenFile(path string, tee io.Writer) (*FileSink, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("events file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("events file %s: %w", path, err)
	}
	return &FileSink{path: path, f: f, tee: tee}, nil
}

func (s *FileSink) Name() string { return "file" }

func (s *FileSink) Publish(ctx context.Context, id string, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := append(append(make([]byte, 0, len(payload)+1), payload...), '\n')
	if _, err := s.f.Write(line); err != nil {
		return fmt.Errorf("events file %s: write event %s: %w", s.path, id, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("events file %s: sync event %s: %w", s.path, id, err)
	}
	if s.tee != nil {
		s.tee.Write(line)
	}
	return nil
}

// PublishBatch appends several events with one fsync: a backlog of thousands of
// events after an outage costs one disk flush per batch, not one per event.
func (s *FileSink) PublishBatch(ctx context.Context, ids []string, payloads [][]byte) []error {
	errs := make([]error, len(ids))
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range payloads {
		n += len(p) + 1
	}
	buf := make([]byte, 0, n)
	for _, p := range payloads {
		buf = append(append(buf, p...), '\n')
	}
	err := func() error {
		if _, err := s.f.Write(buf); err != nil {
			return fmt.Errorf("events file %s: write %d events: %w", s.path, len(ids), err)
		}
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("events file %s: sync %d events: %w", s.path, len(ids), err)
		}
		return nil
	}()
	for i := range errs {
		errs[i] = err
	}
	if err == nil && s.tee != nil {
		s.tee.Write(buf)
	}
	return errs
}

func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}
