// Package uploader moves spooled files to a tus 1.0.0 server (courier-ingest) and
// records the outcome in the spool.
//
// It owns the client side of CONTRACT.md "Upload protocol": capability discovery
// (OPTIONS), creation with the item's courier-id and SHA-256 as metadata, resumable
// PATCH chunks that each carry an Upload-Checksum, resuming from the server's offset
// (HEAD) after any interruption, and the decision what a failure means for the item:
// waiting (with or without counting an attempt), quarantined, or, only when the
// server's Courier-Sha256 header equals the item's digest, verified.
//
// It knows the spool only through the small Store interface and never changes an
// item except through it. It must not mark an item verified on its own judgement
// (a 204 on the last PATCH is not enough), must not count link failures (no
// connection, timeouts, 401/403) against a file, and must not log file contents or
// file names: ids, digests, sizes and status codes only.
//
// Memory use is constant in the file size: a chunk is read from disk twice (once to
// hash it, once to send it) through io.SectionReader, never buffered whole.
package uploader
