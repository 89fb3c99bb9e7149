// Package ingest is courier-ingest, the central receiver: tusd v2's handler
// (used as a library) with what Courier needs put in front of it and around
// its store.
//
// It owns the tus checksum extension (each chunk is held and checked before
// tusd sees it), the incremental whole-file SHA-256 that makes an upload
// "verified" (Courier-Sha256), naming objects after their courier-id and
// answering a second POST with the existing upload, who may upload (tokens,
// client certificates), limits, the janitor that removes abandoned uploads,
// and the Prometheus metrics.
//
// It must not parse or log file contents; it logs upload ids, digests and
// sizes only.
package ingest
