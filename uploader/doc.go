// Package uploader moves spooled files to a tus 1.0.0 server (courier-ingest) and
// records the outcome in the spool.
//
// It owns the client side of CONTRACT.md "Upload protocol": capability discovery
// (OPTIONS), creation with the item's courier-id and SHA-256 as metadata (small
// files travel in the POST: creation-with-upload), resumable PATCH chunks that
// each carry an Upload-Checksum, resuming from the server's offset (HEAD) after
// any interruption, and the decision what a failure means for the item: waiting
// (with or without counting an attempt), quarantined, or, only when the server's
// Courier-Sha256 header equals the item's digest, verified.
//
// It also owns the one link state (Link, WatchLink): up, down (no connection, TLS,
// a failing server or proxy) or paused (401/403, a server that cannot be used as
// configured). While the link is not up the workers hold back and one of them
// probes it (OPTIONS and an authenticated HEAD, backing off to 30 s); items that
// failed for the link wait due at once, so a link that comes back moves them all.
// The same 5xx for several files, a 5xx on OPTIONS and a full store at the server
// are the link's failures, never a file's.
//
// It knows the spool only through the small LeaseStore and OutcomeStore interfaces
// (store.go says which sentinel each method returns), plus the optional Waker, and
// never changes an item except through them. It must not mark an item verified on
// its own judgement (a 204 on the last PATCH is not enough), must not count link
// failures against a file, must not send the token or bytes outside the configured
// endpoint (no redirects, no foreign Location), and must not log file contents,
// file names or credentials: ids, digests, sizes and status codes only.
//
// Memory use is constant in the file size: a chunk is read from disk twice (once to
// hash it, once to send it) through io.SectionReader, never buffered whole; a file
// sent in one request is hashed not at all (its SHA-256 is known from intake).
// The chunk size adapts to the link: halved after an interrupted chunk down to
// MinChunkSize, doubled again after chunks get through.
package uploader
