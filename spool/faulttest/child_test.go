package faulttest

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
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecourier/courier/spool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	childDirEnv   = "COURIER_FAULTTEST_DIR"
	childCountEnv = "COURIER_FAULTTEST_COUNT"
)

// TestChild is the process the fault tests start: it queues COURIER_FAULTTEST_COUNT
// files into the spool in COURIER_FAULTTEST_DIR, reports each committed item on stdout
// ("committed ID SHA256"), says "ready", and then waits: killed (SIGKILL), or, when
// its stdin closes, it closes the spool cleanly (checkpointing the WAL) and exits.
func TestChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("helper process for the fault tests")
	}
	var n int
	fmt.Sscan(os.Getenv(childCountEnv), &n)
	ctx := context.Background()
	s, err := spool.Open(ctx, spool.Options{Dir: dir, Sinks: []string{"file"}})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(3)
	}
	for i := 0; i < n; i++ {
		data := content(i)
		in := spool.Intake{Source: "lab", SourceKind: "folder", Priority: spool.Priority(i % 3),
			Fingerprint: fmt.Sprint("fp-", i), Meta: map[string]string{"n": fmt.Sprint(i)}}
		it, err := s.Receive(ctx, in, bytes.NewReader(data))
		if err != nil {
			fmt.Println("receive failed:", err)
			os.Exit(3)
		}
		fmt.Printf("committed %s %s\n", it.ID, hexSHA256(data))
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	if err := s.Close(); err != nil {
		fmt.Println("close failed:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// content is the i-th file: distinct, random-looking, up to 64 KiB.
func content(i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	b := make([]byte, 1+rng.IntN(64<<10))
	for j := range b {
		b[j] = byte(rng.Uint32())
	}
	return b
}

func hexSHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// queued is what the child reported: id -> SHA-256.
type queued map[string]string

// runChild queues n files in dir in a child process and then stops it: with SIGKILL
// (kill) or a clean close. It returns what the child reported committed.
func runChild(t *testing.T, dir string, n int, kill bool) queued {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir, fmt.Sprint(childCountEnv, "=", n))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	guard := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer guard.Stop()
	got := queued{}
	var other []string
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "committed":
			got[f[1]] = f[2]
			continue
		case sc.Text() == "ready":
			ready = true
		default:
			other = append(other, sc.Text())
			continue
		}
		break
	}
	if kill {
		cmd.Process.Kill() // SIGKILL on unix: nothing checkpointed, no cleanup
	}
	stdin.Close()
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	if !ready || len(got) != n {
		t.Fatalf("child reported %d of %d items (ready %v, exit %v)\n%s\n%s", len(got), n, ready, err,
			strings.Join(other, "\n"), stderr.String())
	}
	if !kill && err != nil {
		t.Fatalf("child did not close cleanly: %v\n%s", err, stderr.String())
	}
	return got
}
