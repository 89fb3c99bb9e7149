//go:build !windows

package folder

import (
	"errors"
	"syscall"
)

// isBusy: only Windows refuses to open a file another program is writing.
func isBusy(error) bool { return false }

func isCrossDevice(err error) bool { return errors.Is(err, syscall.EXDEV) }
