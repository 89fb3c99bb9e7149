//go:build !windows

package folder

import (
	"errors"
	"os"
	"syscall"
)

// openExclusive opens a file for reading. Unix has no share modes: a writer that
// pauses is caught by the settle rule and the post-read size/mtime check.
func openExclusive(name string) (*os.File, error) { return os.Open(name) }

// isBusy: only Windows refuses to open a file another program is writing.
func isBusy(error) bool { return false }

func isCrossDevice(err error) bool { return errors.Is(err, syscall.EXDEV) }
