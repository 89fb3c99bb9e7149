package spool

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"
)

// Options configure a spool. Zero values mean: no cap, keep_done 168h.
type Options struct {
	Dir         string        // agent.data_dir: spool.db and content/ live here
	MaxBytes    int64         // spool.max_bytes; 0 = no cap
	MinFreeDisk int64         // spool.min_free_disk; 0 = no floor
	KeepDone    time.Duration // spool.keep_done
	// Sinks names the event sinks ("file", "mqtt"). Each event gets one outbox row per sink;
	// an item becomes published when every sink has its event.
	Sinks   []string
	Inspect Inspector // may be nil
	Logger  *slog.Logger
	Now     func() time.Time // for tests; nil = time.Now
	// Shared opens without the process lock and without recovery, for CLI commands
	// (status, spool ls/show/retry, events replay) run beside a live agent.
	Shared bool
}

// ListFilter selects items for List.
type ListFilter struct {
	State State // "" = all
	Limit int   // 0 = no limit
}

// Spool is the durable queue. Safe for concurrent use by many goroutines of one process.
type Spool struct {
	opts Options
}

// Open opens (creating if needed) the spool in opts.Dir, takes the process lock
// (ErrLocked if another process holds it), and recovers: removes half-written temp
// files, clears stale leases so uploading items resume, finishes items whose
// events were all published.
func Open(ctx context.Context, opts Options) (*Spool, error) { panic("TODO") }

// Close releases the lock and the database.
func (s *Spool) Close() error { panic("TODO") }

// Receive copies r into the spool (temp file, fsync, rename, dir fsync, SHA-256 and
// SHA-1 in the same pass), runs the inspector, applies dedupe, and commits the row.
// It returns the new item: StateReceived, or StateDuplicate (with its duplicate event
// in the outbox). Only after a nil error may the caller release the source.
// ErrFull: no room now, nothing stored, try later. ErrTooLarge: over in.MaxSize.
func (s *Spool) Receive(ctx context.Context, in Intake, r io.Reader) (*Item, error) { panic("TODO") }

// ReceiveFile is Receive for a file on disk. With move=true and path on the spool's
// filesystem, the file is hard-linked into the spool instead of copied (the digest is
// still computed from what is stored); the caller then deletes or moves its own name.
func (s *Spool) ReceiveFile(ctx context.Context, in Intake, path string, move bool) (*Item, error) {
	panic("TODO")
}

// Reject records a file that was never spooled (too large, unreadable, policy) and
// writes its rejected event to the outbox. reason must not carry patient data.
func (s *Spool) Reject(ctx context.Context, in Intake, size int64, reason string) (*Item, error) {
	panic("TODO")
}

// HasFingerprint reports whether an item of source was taken with this fingerprint.
func (s *Spool) HasFingerprint(ctx context.Context, source, fingerprint string) (bool, error) {
	panic("TODO")
}

// Lease hands the next item to upload to owner for ttl: received, waiting whose
// next attempt is due, or uploading whose lease expired; highest priority first,
// then oldest. ErrEmpty if none.
func (s *Spool) Lease(ctx context.Context, owner string, ttl time.Duration) (*Item, error) {
	panic("TODO")
}

// Renew extends owner's lease on id. ErrLeaseLost if owner no longer holds it.
func (s *Spool) Renew(ctx context.Context, id, owner string, ttl time.Duration) error {
	panic("TODO")
}

// Release gives the lease back without changing the state (shutdown).
func (s *Spool) Release(ctx context.Context, id, owner string) error { panic("TODO") }

// Ready is signalled (non-blocking, coalescing) whenever an item may have become leasable.
func (s *Spool) Ready() <-chan struct{} { panic("TODO") }

// NextDue is the earliest next_attempt of a waiting item (zero if none): when to look again.
func (s *Spool) NextDue(ctx context.Context) (time.Time, error) { panic("TODO") }

// ContentPath is where the item's bytes are stored.
func (s *Spool) ContentPath(id string) string { panic("TODO") }

// OpenContent opens the item's stored bytes for reading.
func (s *Spool) OpenContent(id string) (*os.File, error) { panic("TODO") }

// SetUploadURL records the tus upload URL (state uploading). Called before the first PATCH.
// url "" clears it (the server lost the upload: create again).
func (s *Spool) SetUploadURL(ctx context.Context, id, owner, url string) error { panic("TODO") }

// MarkVerified records the server's confirmation of the whole-file digest and, in the
// same transaction, the verified event in the outbox. Ends the lease.
func (s *Spool) MarkVerified(ctx context.Context, id, owner, location string) error {
	panic("TODO")
}

// MarkWaiting ends the lease with a transient failure: retry at next. counted=true
// increments Attempts (the server answered about this file: 5xx, 460).
func (s *Spool) MarkWaiting(ctx context.Context, id, owner string, next time.Time, reason string, counted bool) error {
	panic("TODO")
}

// Quarantine ends the lease with a permanent failure and writes the quarantined event.
func (s *Spool) Quarantine(ctx context.Context, id, owner, reason string) error { panic("TODO") }

// Retry puts a quarantined (or waiting) item back to received with attempts reset.
func (s *Spool) Retry(ctx context.Context, id string) error { panic("TODO") }

// RetryState retries every item in state; returns how many.
func (s *Spool) RetryState(ctx context.Context, state State) (int, error) { panic("TODO") }

// Pending returns up to limit unpublished outbox events for sink, oldest first.
func (s *Spool) Pending(ctx context.Context, sink string, limit int) ([]OutboxEvent, error) {
	panic("TODO")
}

// MarkPublished marks one outbox row published. When all rows of an item's verified
// event are published the item becomes published, its bytes are removed, then done.
func (s *Spool) MarkPublished(ctx context.Context, seq int64) error { panic("TODO") }

// Events returns the outbox events (one per item and type, any sink) created in
// [since, until), for `courier events replay`.
func (s *Spool) Events(ctx context.Context, since, until time.Time) ([]OutboxEvent, error) {
	panic("TODO")
}

// Get returns one item. ErrNotFound if unknown.
func (s *Spool) Get(ctx context.Context, id string) (*Item, error) { panic("TODO") }

// List returns items, newest first.
func (s *Spool) List(ctx context.Context, f ListFilter) ([]*Item, error) { panic("TODO") }

// Counts returns items per state, the oldest waiting item and the spooled bytes.
func (s *Spool) Counts(ctx context.Context) (Counts, error) { panic("TODO") }

// Sweep deletes finished rows (done, rejected, duplicate) older than keep_done.
func (s *Spool) Sweep(ctx context.Context) (int, error) { panic("TODO") }
