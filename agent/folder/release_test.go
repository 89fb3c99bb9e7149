//go:build linux || windows

package folder

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/testutil"
	"github.com/edgecourier/courier/spool"
)

const pausedWriterEnv = "COURIER_TEST_PAUSED_WRITER"

// pausedHalf is what the paused writer writes before and after its pause.
var pausedHalf = bytes.Repeat([]byte("paused-writer.."), (1<<20)/15+1)[:1<<20]

// pausedWriter is the child process: 1 MiB, a pause far longer than settle, 1 MiB
// more on the same descriptor, as a slow exporter or a stalled network copy does.
func pausedWriter(p string) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		os.Exit(3)
	}
	f.Write(pausedHalf)
	time.Sleep(2 * time.Second)
	f.Write(bytes.ToUpper(pausedHalf))
	if f.Close() != nil {
		os.Exit(4)
	}
	os.Exit(0)
}

// TestPausedWriterFileArrivesWhole (issue 10, break 5): with after: delete, a
// writer that pauses longer than settle must not lose the rest of its file. The
// file is not taken (nor released) while a process holds it open for writing.
func TestPausedWriterFileArrivesWhole(t *testing.T) {
	for _, after := range []string{"delete", "move"} {
		t.Run(after, func(t *testing.T) {
			root := t.TempDir()
			sp := openSpool(t, spool.Options{})
			opts := testOptions(t, root)
			opts.Settle = 300 * time.Millisecond
			opts.Rescan = 200 * time.Millisecond
			if after == "move" {
				opts.After = "move:" + filepath.Join(t.TempDir(), "done")
			}
			startSource(t, opts, sp)

			p := filepath.Join(root, "export.bin")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), pausedWriterEnv+"="+p)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("writer: %v", err)
			}
			want := append(append([]byte{}, pausedHalf...), bytes.ToUpper(pausedHalf)...)
			it := waitItem(t, sp, "export.bin")
			if it.Size != int64(len(want)) || it.SHA256 != digest(want) {
				t.Fatalf("item of %d bytes (sha %.12s), want the whole file: %d bytes (sha %.12s)",
					it.Size, it.SHA256, len(want), digest(want))
			}
			testutil.WaitFor(t, waitTimeout, "the file released", func() bool { return gone(p) })
			if n := len(itemsFor(t, sp, "export.bin")); n != 1 {
				t.Fatalf("%d items, want 1", n)
			}
		})
	}
}
