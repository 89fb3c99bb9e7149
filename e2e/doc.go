// Package e2e drives the real `courier` and `courier-ingest` binaries from the
// outside, through the commands and config keys of CONTRACT.md, the way clinic
// IT would: files dropped in folders, processes killed with SIGKILL, bytes
// compared at the server. It has no production code.
package e2e
