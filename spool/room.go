package spool

import (
	"context"
	"fmt"
)

// The disk floor. Whatever spool.min_free_disk says (0 included), intake keeps
// diskReserve free on the spool's filesystem: the database needs room of its own
// to lease, mark verified and finish items, and finishing is what frees space. Without
// it a full disk deadlocks: no commit can record the upload that would free it.
//
// diskReserve is a tenth of the filesystem's size, at least 1 MiB and at most 64 MiB:
// 64 MiB holds the WAL of many thousands of transactions, while a small disk (a test
// tmpfs, an embedded box) is not made unusable by it. The effective floor is
// max(min_free_disk, diskReserve).
const (
	diskReserveMin = 1 << 20
	diskReserveMax = 64 << 20
)

func diskReserve(total int64) int64 {
	return min(max(total/10, diskReserveMin), diskReserveMax)
}

// SpooledBytes is the size of all content held in the spool. It is kept as a running
// total by triggers, so it costs one row read however long the queue is.
func (s *Spool) SpooledBytes(ctx context.Context) (int64, error) {
	q := `SELECT value FROM totals WHERE name = 'stored_bytes'`
	if s.legacy {
		q = `SELECT COALESCE(SUM(size), 0) FROM items WHERE stored = 1`
	}
	var n int64
	if err := s.r.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("spool %s: spooled bytes: %w", s.dir, err)
	}
	return n, nil
}

// checkRoom says ErrFull when size more bytes would pass max_bytes or the disk floor.
// It returns how many bytes a stream of unknown size may still write (-1: no cap).
// An empty spool takes anything within the disk floor, so a file larger than
// max_bytes still gets through instead of being refused forever. The cap is soft:
// concurrent intakes are not reserved against each other.
func (s *Spool) checkRoom(ctx context.Context, size int64) (int64, error) {
	allowed := int64(-1)
	if s.opts.MaxBytes > 0 {
		spooled, err := s.SpooledBytes(ctx)
		if err != nil {
			return 0, err
		}
		if spooled > 0 {
			if spooled+size > s.opts.MaxBytes {
				return 0, fmt.Errorf("%d bytes spooled, max_bytes %d: %w", spooled, s.opts.MaxBytes, ErrFull)
			}
			allowed = s.opts.MaxBytes - spooled
		}
	}
	free, total, err := freeDisk(s.dir)
	if err != nil {
		return 0, fmt.Errorf("free disk space: %w", err)
	}
	floor := max(s.opts.MinFreeDisk, diskReserve(total))
	if free-size < floor {
		return 0, fmt.Errorf("%d bytes free, floor %d (min_free_disk %d, database reserve %d): %w",
			free, floor, s.opts.MinFreeDisk, diskReserve(total), ErrFull)
	}
	if left := free - floor; allowed < 0 || left < allowed {
		allowed = left
	}
	return allowed, nil
}
