// Package spool is Courier's durable queue: every file a source hands over lives here,
// bytes and state, from "received" until its verified event is published and the bytes
// are gone.
//
// What it owns:
//
//   - Dir/spool.db, a SQLite database (WAL, synchronous=FULL, foreign keys): one row per
//     item, the outbox of events (one row per event and sink), the fingerprints that
//     folder sources with after: keep use to not take a file twice, running totals
//     (spooled bytes, the wake counter) kept by triggers, and the audit trail: one
//     hash-chained, append-only row per state change (audit.go).
//   - Dir/content/<last two hex digits of the id>/<id>: the stored bytes, and beside
//     them <id>.json, the item's description (source, digest, size, received_at,
//     priority, envelope...). UUIDv7 ids start with a timestamp, so the random tail is
//     what spreads files over folders.
//   - Dir/tmp/: files being written. Anything there at start-up is a leftover of a crash.
//   - Dir/lock: held (flock / LockFileEx) by the one agent process that owns the spool.
//
// The ordering that makes the contract's promise hold ("only then is the source
// released"): bytes are written to tmp/ and fsynced, the description likewise, both
// are renamed into content/ (description first), the folder is fsynced, and only then
// is the row committed. Events are written to the outbox in the same transaction as the
// state change they report, so an item can never be verified without its event,
// however the process dies; audit rows likewise.
//
// Content is never deleted because the database does not know it. Stored bytes with a
// description and no row (a crash between rename and commit, or rows lost with the
// WAL) are taken back as received at start-up. A database that is new or empty while
// content/ holds files (deleted, truncated, its WAL lost) is a hard stop
// (ErrNeedsRecovery), as is one that fails PRAGMA quick_check (ErrCorrupt); both errors
// name the file and say to run `courier spool recover` (Recover), which rebuilds every
// row from the descriptions. `courier spool verify` (Verify) checks, changes nothing.
//
// A full disk pauses intake (ErrFull) before the database's own reserve is touched
// (room.go), so uploads and finishing, which free space, still commit; a start-up on a
// full disk writes nothing unless something needs recovery, and OpenReadOnly never
// writes.
//
// What it must not do: talk to the network, know about tus, MQTT or HL7 (an Inspector
// hands it opaque keys), log file names, file contents or anything from an Envelope, or
// delete the caller's source file (the caller does that after a nil error).
//
// CLI commands open the spool with Options.Shared beside a running agent: no lock, no
// recovery, and writes that wait for the agent's (busy_timeout); courier status uses
// OpenReadOnly. Ready is an in-process signal; WakeCounter is the one that crosses
// processes (a CLI retry), cheap enough to poll every 250 ms.
//
// The uploader's contract (which sentinel each method returns):
//
//   - Lease: ErrEmpty when nothing is due.
//   - Renew, Release, SetUploadURL, MarkVerified, MarkWaiting, Quarantine: ErrLeaseLost
//     when the caller no longer holds the lease, ErrNotFound for an unknown id.
//   - OpenContent: ErrContentMissing (also fs.ErrNotExist) when the bytes are gone:
//     quarantine the item with that reason.
//   - Receive, ReceiveFile: ErrFull (try later, nothing stored), ErrTooLarge (reject).
//   - Open: ErrLocked, ErrCorrupt, ErrNeedsRecovery.
package spool
