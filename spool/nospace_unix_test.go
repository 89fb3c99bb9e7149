//go:build !windows

package spool

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"syscall"
	"testing"
)

// enospcReader hands out some bytes and then fails the way a full disk fails a write.
type enospcReader struct{ left int }

func (r *enospcReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, &writeErr{syscall.ENOSPC}
	}
	n := min(len(p), r.left)
	r.left -= n
	return n, nil
}

type writeErr struct{ errno syscall.Errno }

func (e *writeErr) Error() string { return "write: " + e.errno.Error() }
func (e *writeErr) Unwrap() error { return e.errno }

func TestNoSpaceIsFull(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	_, err := s.Receive(context.Background(), Intake{Source: "lab"}, io.MultiReader(&enospcReader{left: 1000}))
	if !errors.Is(err, ErrFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("ENOSPC: %v, want ErrFull wrapping ENOSPC", err)
	}
	for _, sub := range []string{"tmp", "content"} {
		if left := filesUnder(t, filepath.Join(dir, sub)); len(left) != 0 {
			t.Fatalf("%s after ENOSPC: %v", sub, left)
		}
	}
}
