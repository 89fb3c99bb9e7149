//go:build !windows

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Peers, pinned: what a new user would pick instead of Courier.
const (
	tusdModule     = "github.com/tus/tusd/v2/cmd/tusd@v2.9.1"
	tusJSClientPkg = "tus-js-client@4"
)

type bench struct {
	o       options
	start   time.Time
	courier string // binaries built from this checkout
	ingest  string
	tusd    string
	nodeDir string // holds node_modules/tus-js-client
	version string
	results []result
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] "+format+"\n", append([]any{time.Since(b.start).Seconds()}, args...)...)
}

func (b *bench) setup(ctx context.Context) error {
	bin := filepath.Join(b.o.work, "bin")
	b.courier, b.ingest = filepath.Join(bin, "courier"), filepath.Join(bin, "courier-ingest")
	b.version = strings.TrimSpace(output(ctx, b.o.root, "git", "describe", "--tags", "--always", "--dirty"))
	for out, pkg := range map[string]string{b.courier: "./cmd/courier", b.ingest: "./cmd/courier-ingest"} {
		b.logf("building %s", pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
		cmd.Dir, cmd.Env = b.o.root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	}
	gobin := strings.TrimSpace(output(ctx, b.o.root, "go", "env", "GOPATH")) + "/bin"
	b.tusd = filepath.Join(gobin, "tusd")
	if !b.o.skipPeers {
		if _, err := os.Stat(b.tusd); err != nil {
			b.logf("installing stock tusd (%s)", tusdModule)
			cmd := exec.CommandContext(ctx, "go", "install", tusdModule)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go install %s: %v\n%s", tusdModule, err, out)
			}
		}
		cache, _ := os.UserCacheDir()
		b.nodeDir = filepath.Join(cache, "courier-bench", "node-tus-js-client-4")
		if _, err := os.Stat(filepath.Join(b.nodeDir, "node_modules", "tus-js-client")); err != nil {
			b.logf("installing %s with npm into %s", tusJSClientPkg, b.nodeDir)
			os.MkdirAll(b.nodeDir, 0o755)
			cmd := exec.CommandContext(ctx, "npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", b.nodeDir, tusJSClientPkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("npm install %s (needs nodejs and npm: apt-get install nodejs npm): %v\n%s", tusJSClientPkg, err, out)
			}
		}
		if err := os.WriteFile(filepath.Join(b.nodeDir, "upload.js"), []byte(uploadJS), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func output(ctx context.Context, dir string, name string, args ...string) string {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, _ := cmd.Output()
	return string(out)
}

// proc is a server or agent started for one round.
type proc struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

func startProc(ctx context.Context, name string, args ...string) (*proc, error) {
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd, log: &buf}, nil
}

// peakRSS is the process's high-water mark of resident memory (VmHWM), in bytes.
func (p *proc) peakRSS() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(ctx context.Context, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer within %s", url, d)
}

func sha256File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// writeRandom makes a file of n bytes of pseudo-random data (not compressible).
func writeRandom(path string, n int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	x := seed | 1
	for written := int64(0); written < n; {
		for i := 0; i+8 <= len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			for k := 0; k < 8; k++ {
				buf[i+k] = byte(x >> (8 * k))
			}
		}
		m := min(int64(len(buf)), n-written)
		if _, err := f.Write(buf[:m]); err != nil {
			f.Close()
			return err
		}
		written += m
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// countLines counts lines of path containing needle.
func countLines(path, needle string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte(needle))
}

var errCheck = errors.New("result check failed")
