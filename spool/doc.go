// Package spool is Courier's durable queue: every file a source hands over lives here,
// bytes and state, from "received" until its verified event is published and the bytes
// are gone.
//
// What it owns:
//
//   - Dir/spool.db, a SQLite database (WAL, synchronous=FULL, foreign keys): one row per
//     item, the outbox of events (one row per event and sink), and the fingerprints that
//     folder sources with after: keep use to not take a file twice.
//   - Dir/content/<last two hex digits of the id>/<id>: the stored bytes. UUIDv7 ids
//     start with a timestamp, so the random tail is what spreads files over folders.
//   - Dir/tmp/: files being written. Anything there at start-up is a leftover of a crash.
//   - Dir/lock: held (flock / LockFileEx) by the one agent process that owns the spool.
//
// The ordering that makes the contract's promise hold ("only then is the source
// released"): bytes are written to tmp/, fsynced, renamed into content/, the folder is
// fsynced, and only then is the row committed. A crash before the commit leaves a content
// file without a row, which recovery removes; the source still has the file. Events are
// written to the outbox in the same transaction as the state change they report, so an
// item can never be verified without its event, however the process dies.
//
// What it must not do: talk to the network, know about tus, MQTT or HL7 (an Inspector
// hands it opaque keys), log file names, file contents or anything from an Envelope, or
// delete the caller's source file (the caller does that after a nil error).
//
// CLI commands open the spool with Options.Shared beside a running agent: no lock, no
// recovery, and writes that wait for the agent's (busy_timeout). Ready is an in-process
// signal only; the agent should also poll now and then to notice a CLI retry.
package spool
