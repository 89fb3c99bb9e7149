//go:build !linux && !windows

package folder

import "io/fs"

// identity: not implemented on this platform; path, size and mtime alone.
func identity(string, fs.FileInfo) string { return "" }

// heldForWriting: not implemented on this platform; settle and the size/mtime
// checks are all there is.
func heldForWriting(string, fs.FileInfo) (bool, error) { return false, nil }
