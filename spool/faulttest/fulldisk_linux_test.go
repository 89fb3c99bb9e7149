package faulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgecourier/courier/spool"
)

// TestFullDisk is issue 10's break 3 on a real 40 MiB tmpfs: with min_free_disk 0 the
// spool used to fill its own disk until not even a lease could commit. Now intake stops
// with ErrFull at the database's reserve, uploads and finishing go on (and free the
// space), and when something else fills the disk to the last byte the agent still
// starts and status still reads.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs")
	}
	t.Parallel()
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=40m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): run as root (or with CAP_SYS_ADMIN) to test a full disk", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	dir := filepath.Join(mnt, "data")
	ctx := context.Background()
	s, err := spool.Open(ctx, spool.Options{Dir: dir, MinFreeDisk: 0, Sinks: []string{"file"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	// Intake until the spool says full (bounded: 40 files of 1 MiB would be too many).
	data := make([]byte, 1<<20)
	var queued [][]byte
	for i := 0; ; i++ {
		if i == 40 {
			t.Fatal("40 MiB taken on a 40 MiB disk without ErrFull")
		}
		rand.Read(data)
		_, err := s.Receive(ctx, spool.Intake{Source: "lab"}, bytes.NewReader(data))
		if errors.Is(err, spool.ErrFull) {
			break
		}
		if err != nil {
			t.Fatalf("intake %d: %v", i, err)
		}
		queued = append(queued, bytes.Clone(data))
	}
	if len(queued) < 20 {
		t.Fatalf("only %d MiB taken before ErrFull on a 40 MiB disk", len(queued))
	}
	if free := freeBytes(t, mnt); free < 2<<20 {
		t.Fatalf("intake left %d bytes free: the database's reserve was eaten", free)
	}

	// Uploads and finishing still commit, and free the space.
	for range queued {
		it, err := s.Lease(ctx, "w", time.Minute)
		if err != nil {
			t.Fatalf("lease on a full spool: %v", err)
		}
		if err := s.MarkVerified(ctx, it.ID, "w", "loc"); err != nil {
			t.Fatalf("mark verified on a full spool: %v", err)
		}
	}
	evs, err := s.Pending(ctx, "file", 0)
	if err != nil || len(evs) != len(queued) {
		t.Fatalf("pending: %d, %v", len(evs), err)
	}
	seqs := make([]int64, len(evs))
	for i, ev := range evs {
		seqs[i] = ev.Seq
	}
	if err := s.MarkPublishedBatch(ctx, seqs); err != nil {
		t.Fatalf("mark published on a full spool: %v", err)
	}
	c, err := s.Counts(ctx)
	if err != nil || c.ByState[spool.StateDone] != len(queued) || c.Bytes != 0 {
		t.Fatalf("after draining: %+v, %v", c, err)
	}
	if _, err := s.Receive(ctx, spool.Intake{Source: "lab"}, bytes.NewReader(data)); err != nil {
		t.Fatalf("intake after draining: %v", err)
	}

	// Something else fills the disk to the last byte.
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler)
	if _, err := s.Receive(ctx, spool.Intake{Source: "lab"}, bytes.NewReader([]byte("x"))); !errors.Is(err, spool.ErrFull) {
		t.Fatalf("intake on a full disk: %v, want ErrFull", err)
	}
	s.Close()
	// A restart must not need to write to start, nor status to read.
	s, err = spool.Open(ctx, spool.Options{Dir: dir, Sinks: []string{"file"}})
	if err != nil {
		t.Fatalf("restart on a full disk: %v", err)
	}
	ro, err := spool.OpenReadOnly(ctx, dir)
	if err != nil {
		t.Fatalf("status on a full disk: %v", err)
	}
	c, err = ro.Counts(ctx)
	ro.Close()
	if err != nil || c.ByState[spool.StateReceived] != 1 || c.ByState[spool.StateDone] != len(queued) {
		t.Fatalf("status counts on a full disk: %+v, %v", c, err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Receive(ctx, spool.Intake{Source: "lab"}, bytes.NewReader([]byte("y"))); err != nil {
		t.Fatalf("intake once there is room again: %v", err)
	}
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// fillDisk writes path until the disk is full (ENOSPC), bounded by the tmpfs size.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for i := 0; i < 41<<4; i++ { // 41 MiB in 64 KiB writes: more than the disk holds
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				for j := 0; j < 64; j++ { // the last partial blocks
					if _, err := f.Write(buf[:512]); err != nil {
						break
					}
				}
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatal("wrote 41 MiB to a 40 MiB tmpfs without ENOSPC")
}
