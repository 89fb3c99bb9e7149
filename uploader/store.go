package uploader

import (
	"context"
	"os"
	"time"

	"github.com/edgecourier/courier/spool"
)

// LeaseStore is the half of the spool that hands out work: which item to upload
// next, for how long it is ours, and its bytes. *spool.Spool satisfies it.
//
// Errors callers branch on (an implementation may wrap them):
//
//   - Lease: spool.ErrEmpty when nothing is due now. The returned item is in state
//     uploading, leased by owner until now+ttl; its UploadURL, if any, is the upload
//     to resume.
//   - Renew, Release: spool.ErrLeaseLost when owner no longer holds the lease (it
//     expired and another owner took the item); spool.ErrNotFound for an unknown id.
//     Release leaves the state and the upload URL as they are and makes the item
//     leasable at once.
//   - Ready: a coalescing signal (never closed) that an item may have become
//     leasable in this process: after an intake, a retry, a release or a transition
//     to waiting. Changes made by another process do not signal it (see Waker).
//   - NextDue: the earliest next attempt of a waiting item, zero if none.
//   - OpenContent: the item's spooled bytes. When they are missing the error matches
//     fs.ErrNotExist (spool.ErrContentMissing) or, from older spools, spool.ErrNotFound;
//     the uploader then quarantines the item. Any other error is transient.
type LeaseStore interface {
	Lease(ctx context.Context, owner string, ttl time.Duration) (*spool.Item, error)
	Renew(ctx context.Context, id, owner string, ttl time.Duration) error
	Release(ctx context.Context, id, owner string) error
	Ready() <-chan struct{}
	NextDue(ctx context.Context) (time.Time, error)
	OpenContent(id string) (*os.File, error)
}

// OutcomeStore is the half of the spool that records what an attempt achieved.
// *spool.Spool satisfies it. Every method acts only while owner holds the lease
// and returns spool.ErrLeaseLost otherwise (nothing is changed then), and
// spool.ErrNotFound for an unknown id.
//
//   - SetUploadURL: remembers the tus upload URL before bytes are sent by PATCH, so a
//     restart resumes; "" forgets it (the server lost the upload). The lease stays.
//   - MarkVerified: the server confirmed the whole-file SHA-256; writes the verified
//     event in the same transaction and ends the lease.
//   - MarkWaiting: a transient failure; the item is due again at next. counted adds
//     one to Attempts (the server answered about this file). Ends the lease.
//   - Quarantine: a permanent failure of this file; writes the quarantined event in
//     the same transaction and ends the lease. The bytes stay for `courier spool retry`.
type OutcomeStore interface {
	SetUploadURL(ctx context.Context, id, owner, url string) error
	MarkVerified(ctx context.Context, id, owner, location string) error
	MarkWaiting(ctx context.Context, id, owner string, next time.Time, reason string, counted bool) error
	Quarantine(ctx context.Context, id, owner, reason string) error
}

// Store is the part of the spool the uploader needs. *spool.Spool satisfies it.
type Store interface {
	LeaseStore
	OutcomeStore
}

// Waker is an optional ability of a Store, found by type assertion (as tusd finds
// a DataStore's optional abilities): a cheap counter that changes whenever the
// spool was changed, also by another process (`courier spool retry`). Run polls it
// about every 250 ms and, when it moved, lets a worker look for work at once and,
// while the link is down or paused, probes the link without waiting for the backoff.
type Waker interface {
	WakeCounter(ctx context.Context) (int64, error)
}

var (
	_ LeaseStore   = (*spool.Spool)(nil)
	_ OutcomeStore = (*spool.Spool)(nil)
	_ Store        = (*spool.Spool)(nil)
)
