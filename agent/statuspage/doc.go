// Package statuspage is the agent's local status page for clinic IT: one HTML page,
// its script and style embedded in the binary (no CDN, works offline), and the JSON it
// polls. It is read-only and shows ids, sizes, digests and states only — never file
// names or anything from a file's content.
//
// It owns the page and the View it renders; the agent fills the View.
package statuspage
