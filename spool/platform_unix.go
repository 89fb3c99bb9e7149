//go:build !windows

package spool

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

type fileLock struct{ f *os.File }

// lockFile takes an exclusive flock on path. The kernel drops it when the process dies,
// so a crashed agent never leaves the spool locked.
func lockFile(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, err
	}
	return &fileLock{f: f}, nil
}

func (l *fileLock) unlock() error {
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	return l.f.Close()
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// freeDisk is the space available to this (unprivileged) user on dir's filesystem,
// and the filesystem's size.
func freeDisk(dir string) (free, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	clamp := func(n uint64) int64 { return int64(min(n, 1<<62)) }
	return clamp(uint64(st.Bavail) * uint64(st.Bsize)), clamp(uint64(st.Blocks) * uint64(st.Bsize)), nil
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// openNoFollow opens a source file for reading without following a symlink in
// its last component: a link swapped in after the caller looked is refused.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}
