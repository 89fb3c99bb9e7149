package spool

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	crashDirEnv   = "COURIER_SPOOL_CRASH_DIR"
	crashInboxEnv = "COURIER_SPOOL_CRASH_INBOX"
	// crashWorkersEnv: intakes at once in the child (their rows are group-committed).
	crashWorkersEnv = "COURIER_SPOOL_CRASH_WORKERS"
)

// TestCrashChild is the process TestCrashRecovery kills: it receives files as fast as it
// can and reports each committed item on stdout.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	inbox := os.Getenv(crashInboxEnv)
	ctx := context.Background()
	s, err := Open(ctx, Options{Dir: dir, Sinks: []string{"file", "mqtt"}})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(3)
	}
	workers := 1
	fmt.Sscan(os.Getenv(crashWorkersEnv), &workers)
	var out sync.Mutex
	for w := 1; w < workers; w++ {
		go crashIntakes(ctx, s, inbox, w, &out) // ends with the process (SIGKILL)
	}
	crashIntakes(ctx, s, inbox, 0, &out)
}

// crashIntakes receives files as fast as it can and reports each committed item.
func crashIntakes(ctx context.Context, s *Spool, inbox string, w int, out *sync.Mutex) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
	var err error
	for i := 0; ; i++ {
		data := make([]byte, rng.IntN(256<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		in := Intake{Source: "crash", Fingerprint: fmt.Sprint("fp-", w, "-", i)}
		var it *Item
		if i%3 == 0 {
			src := filepath.Join(inbox, fmt.Sprint("f", os.Getpid(), "-", w, "-", i))
			if err := os.WriteFile(src, data, 0o600); err != nil {
				fmt.Println("write source:", err)
				os.Exit(3)
			}
			it, err = s.ReceiveFile(ctx, in, src)
			if err == nil {
				os.Remove(src)
			}
		} else {
			it, err = s.Receive(ctx, in, bytes.NewReader(data))
		}
		if err != nil {
			fmt.Println("receive failed:", err)
			os.Exit(3)
		}
		out.Lock()
		fmt.Printf("committed %s %s\n", it.ID, hexSHA256(data))
		out.Unlock()
		if i%4 == 0 {
			// Move some items along so removal of published bytes gets killed too.
			if l, err := s.Lease(ctx, "w", time.Hour); err == nil {
				s.MarkVerified(ctx, l.ID, "w", "loc")
				evs, _ := s.Pending(ctx, "file", 10)
				evs2, _ := s.Pending(ctx, "mqtt", 10)
				for _, ev := range append(evs, evs2...) {
					s.MarkPublished(ctx, ev.Seq)
				}
			}
		}
	}
}

// TestCrashRecovery SIGKILLs a process in the middle of intakes and checks that every
// item it reported is there with bytes matching its digest, and nothing half-written
// is left.
func TestCrashRecovery(t *testing.T) {
	crashRounds(t, 1)
}

// TestCrashRecoveryConcurrent is TestCrashRecovery with eight intakes at once, so the
// kill lands in group commits: every item whose Receive returned is there afterwards.
func TestCrashRecoveryConcurrent(t *testing.T) {
	crashRounds(t, 8)
}

func crashRounds(t *testing.T, workers int) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir, inbox := t.TempDir(), t.TempDir()
	reported := map[string]string{}
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashInboxEnv+"="+inbox,
			fmt.Sprint(crashWorkersEnv, "=", workers))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		guard := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
		sc := bufio.NewScanner(out)
		n, target := 0, 15+round*10
		var other []string
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "committed" {
				reported[f[1]] = f[2]
				if n++; n == target {
					time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
					cmd.Process.Kill() // SIGKILL on unix: no deferred cleanup runs
				}
				continue
			}
			other = append(other, sc.Text())
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		guard.Stop()
		if n < target {
			t.Fatalf("round %d: child reported %d items before it ended, want %d\n%s\n%s",
				round, n, target, strings.Join(other, "\n"), stderr.String())
		}
		checkAfterCrash(t, dir, reported)
	}
}

func checkAfterCrash(t *testing.T, dir string, reported map[string]string) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, Options{Dir: dir, Sinks: []string{"file", "mqtt"}})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer s.Close()
	if left := filesUnder(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files after recovery: %v", left)
	}
	items, err := s.List(ctx, ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*Item{}
	for _, it := range items {
		byID[it.ID] = it
	}
	for id, sum := range reported {
		it, ok := byID[id]
		if !ok {
			t.Fatalf("committed item %s lost", id)
		}
		if it.SHA256 != sum {
			t.Fatalf("item %s: digest %s, child computed %s", id, it.SHA256, sum)
		}
	}
	var stored int
	for _, it := range items {
		hasBytes := it.State == StateReceived || it.State == StateUploading || it.State == StateVerified
		b, err := os.ReadFile(s.ContentPath(it.ID))
		if !hasBytes {
			if err == nil {
				t.Fatalf("item %s (%s) still has bytes", it.ID, it.State)
			}
			continue
		}
		if err != nil {
			t.Fatalf("item %s (%s): %v", it.ID, it.State, err)
		}
		h := sha256.Sum256(b)
		if hex.EncodeToString(h[:]) != it.SHA256 || int64(len(b)) != it.Size {
			t.Fatalf("item %s: stored bytes do not match the committed digest", it.ID)
		}
		stored++
	}
	// Each item with bytes has them and their description (<id>.json).
	if files := filesUnder(t, filepath.Join(dir, "content")); len(files) != 2*stored {
		t.Fatalf("%d content files for %d items with bytes (want bytes and description each)", len(files), stored)
	}
}
