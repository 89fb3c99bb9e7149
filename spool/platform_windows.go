//go:build windows

package spool

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

type fileLock struct{ f *os.File }

// lockFile takes an exclusive LockFileEx lock on path; Windows drops it with the process.
func lockFile(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	ol := new(windows.Overlapped)
	err = windows.LockFileEx(windows.Handle(f.Fd()),
		windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, ErrLocked
		}
		return nil, err
	}
	return &fileLock{f: f}, nil
}

func (l *fileLock) unlock() error {
	ol := new(windows.Overlapped)
	windows.UnlockFileEx(windows.Handle(l.f.Fd()), 0, 1, 0, ol)
	return l.f.Close()
}

// syncDir is a no-op: Windows cannot open a directory for FlushFileBuffers, and NTFS
// journals the rename itself.
func syncDir(string) error { return nil }

// freeDisk is the space available to this user on dir's volume, and the volume's size.
func freeDisk(dir string) (free, size int64, err error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, 0, err
	}
	var avail, total, totalFree uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &totalFree); err != nil {
		return 0, 0, err
	}
	return int64(min(avail, 1<<62)), int64(min(total, 1<<62)), nil
}

func isNoSpace(err error) bool {
	return errors.Is(err, windows.ERROR_DISK_FULL) || errors.Is(err, windows.ERROR_HANDLE_DISK_FULL)
}

// openNoFollow opens a source file for reading. Windows has no O_NOFOLLOW; the
// caller compares the opened file with what Lstat saw.
func openNoFollow(path string) (*os.File, error) {
	return os.Open(path)
}
