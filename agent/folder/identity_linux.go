package folder

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// identity is what tells one file from another with the same name, size and mtime:
// device and inode (a copy tool that writes a new file and renames it), and ctime
// (an in-place rewrite that puts the old mtime back still moves ctime).
func identity(_ string, fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d.%09d", st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
}

// heldForWriting reports whether any process has the file at p open for writing. A
// writer that pauses longer than settle looks settled; this is how it is caught.
//
// First a read lease (fcntl F_SETLEASE F_RDLCK): the kernel refuses it with EAGAIN
// while the file is open for writing anywhere. It is given back at once. Leases need
// the file's owner or CAP_LEASE and a local filesystem; otherwise every process's
// open files are read from /proc, which sees only what this agent may see (a writer
// in another container or user namespace, or on another host of a network share,
// stays invisible).
func heldForWriting(p string, fi fs.FileInfo) (bool, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var lerr error
	if cerr := rc.Control(func(fd uintptr) {
		if _, lerr = unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_RDLCK); lerr == nil {
			unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_UNLCK)
		}
	}); cerr != nil {
		return false, cerr
	}
	switch {
	case lerr == nil:
		return false, nil
	case errors.Is(lerr, unix.EAGAIN):
		return true, nil
	}
	return procWriters(fi)
}

// procWriters looks through /proc/*/fd for a descriptor of fi's file opened for writing.
func procWriters(fi fs.FileInfo) (bool, error) {
	want, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, errors.New("no inode to look for")
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false, fmt.Errorf("list processes: %w", err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, pe := range procs {
		pid := pe.Name()
		if pid == self || pid[0] < '0' || pid[0] > '9' {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", pid, "fd"))
		if err != nil {
			continue // gone, or not ours to see
		}
		for _, fe := range fds {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join("/proc", pid, "fd", fe.Name()), &st) != nil ||
				st.Dev != want.Dev || st.Ino != want.Ino {
				continue
			}
			if writeMode(filepath.Join("/proc", pid, "fdinfo", fe.Name())) {
				return true, nil
			}
		}
	}
	return false, nil
}

// writeMode reads the open flags of one descriptor from its fdinfo file.
func writeMode(fdinfo string) bool {
	f, err := os.Open(fdinfo)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&syscall.O_ACCMODE != syscall.O_RDONLY
		}
	}
	return false
}
