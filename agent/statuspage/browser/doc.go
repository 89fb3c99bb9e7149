// Package browser holds the status page's browser test: Debian's chromium, driven
// by chromedp, reads the page of a real agent uploading to a real courier-ingest,
// then with the ingest stopped. It has no code of its own.
package browser
