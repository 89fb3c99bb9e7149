package uploader

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecourier/courier/spool"
)

// serverEnv, when set, makes the test binary a tus server for BenchmarkUpload: the
// server runs in its own process so the benchmark's allocation figures are the
// uploader's (and the spool's) alone.
const serverEnv = "UPLOADER_TEST_SERVE"

// serveForBenchmark serves until stdin closes (the benchmark ended or died).
func serveForBenchmark() int {
	dir, err := os.MkdirTemp("", "uploader-bench-server-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := openTusServer(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: s.handler}
	go srv.Serve(ln)
	fmt.Printf("ADDR %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	s.srv.Close()
	return 0
}

// startServerProcess runs the tus server in a child process and returns its endpoint.
func startServerProcess(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), serverEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		b.Fatalf("server process: %q %v", line, err)
	}
	return "http://" + addr + "/files/"
}

// sampleLiveHeap watches the live heap (as of the last GC) until the returned
// function is called, which reports the highest value seen. Allocations per op
// grow with the number of requests (net/http allocates a copy buffer per request
// body); what must not grow with the file is the memory held.
func sampleLiveHeap() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	done := make(chan struct{})
	result := make(chan uint64)
	go func() {
		var peak uint64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-done:
				result <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		return <-result
	}
}

// BenchmarkUpload sends whole files over loopback to a tus server in another
// process. B/op stays flat as the file grows (constant memory); compare chunk sizes
// for throughput.
func BenchmarkUpload(b *testing.B) {
	endpoint := startServerProcess(b)
	for _, size := range []int64{16 << 20, 64 << 20} {
		for _, chunk := range []int64{1 << 20, 8 << 20} {
			b.Run(fmt.Sprintf("file=%dMiB/chunk=%dMiB", size>>20, chunk>>20), func(b *testing.B) {
				benchUpload(b, endpoint, size, chunk)
			})
		}
	}
}

func benchUpload(b *testing.B, endpoint string, size, chunk int64) {
	ctx := context.Background()
	sp, err := spool.Open(ctx, spool.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer client.CloseIdleConnections()
	u, err := New(sp, Options{Endpoint: endpoint, ChunkSize: chunk, RequireVerification: true, Client: client})
	if err != nil {
		b.Fatal(err)
	}
	peak := sampleLiveHeap()
	defer func() { b.ReportMetric(float64(peak())/(1<<20), "live-heap-peak-MiB") }()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		src := io.LimitReader(rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(size >> 20), byte(chunk >> 20)}), size)
		if _, err := sp.Receive(ctx, spool.Intake{Source: "bench", SourceKind: "folder"}, src); err != nil {
			b.Fatal(err)
		}
		it, err := sp.Lease(ctx, "bench", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		err = u.Upload(ctx, it, "bench")
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSmallFiles uploads 4 KiB files to a tus server in another process.
// intake=live receives them while Run uploads (one op is one file from intake to
// verified: waits between the stages show); intake=queued has them all spooled
// before Run starts (the uploader's own rate: round trips, connections, spool
// commits).
func BenchmarkSmallFiles(b *testing.B) {
	endpoint := startServerProcess(b)
	for _, queued := range []bool{false, true} {
		name := "intake=live"
		if queued {
			name = "intake=queued"
		}
		b.Run(name, func(b *testing.B) { benchSmallFiles(b, endpoint, 4, queued) })
	}
}

func benchSmallFiles(b *testing.B, endpoint string, concurrency int, queued bool) {
	ctx, cancel := context.WithCancel(context.Background())
	sp, err := spool.Open(ctx, spool.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	var done atomic.Int64
	all := make(chan struct{})
	u, err := New(sp, Options{Endpoint: endpoint, RequireVerification: true, Concurrency: concurrency,
		Progress: func(p Progress) {
			if p.Done && done.Add(1) == int64(b.N) {
				close(all)
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 4<<10)
	receive := func() {
		for i := range b.N {
			data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
			if _, err := sp.Receive(ctx, spool.Intake{Source: "bench", SourceKind: "folder"}, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	}
	if queued {
		receive()
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	start := time.Now()
	ran := make(chan error, 1)
	go func() { ran <- u.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			b.Error(err)
		}
	}()
	if !queued {
		receive()
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d files verified", done.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "files/s")
}
