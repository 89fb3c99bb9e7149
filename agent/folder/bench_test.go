package folder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/testutil"
	"github.com/edgecourier/courier/spool"
)

// benchFiles is the size of the folder a rescan walks in BenchmarkScan
// (override with COURIER_BENCH_FILES).
const benchFiles = 50_000

// BenchmarkScan measures a full rescan of a folder whose files were all taken
// already with after: keep, so every file is a fingerprint question:
//
//   - cold: the first scan of a new process, one spool lookup per file;
//   - warm: later rescans, answered from the source's memory (stat only).
//
// The fixture lives on /dev/shm when there is one, so that filling the spool (one
// fsynced commit per file) takes seconds, not minutes; the scan itself does no fsync.
//
//	go test -run '^$' -bench BenchmarkScan -benchtime 5x ./agent/folder/
func BenchmarkScan(b *testing.B) {
	n := benchFiles
	if v, err := strconv.Atoi(os.Getenv("COURIER_BENCH_FILES")); err == nil && v > 0 {
		n = v
	}
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "courier-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	root := filepath.Join(dir, "inbox")
	sp := openSpool(b, spool.Options{Dir: filepath.Join(dir, "spool")})
	for i := range n {
		p := filepath.Join(root, fmt.Sprintf("d%03d", i%100), fmt.Sprintf("result-%06d.hl7", i))
		if i < 100 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(p, []byte("MSH|"+strconv.Itoa(i)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	opts := Options{Name: "bench", Path: root, After: "keep", Settle: time.Millisecond, Rescan: time.Hour, NoWatch: true}

	// Take everything once, as a running agent would have.
	fill := startSource(b, opts, sp)
	start := time.Now()
	testutil.WaitFor(b, waitTimeout, "every file taken", func() bool { return fill.counters().Taken == int64(n) })
	b.Logf("took %d files into the spool in %v", n, time.Since(start).Round(time.Millisecond))
	fill.stop(b)

	ctx := context.Background()
	b.Run("cold", func(b *testing.B) {
		var scanned int
		for b.Loop() {
			b.StopTimer()
			s, err := New(opts, sp)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			s.fullScan(ctx)
			if len(s.known) != n || len(s.pending) != 0 {
				b.Fatalf("cold scan: %d known, %d pending; want %d known", len(s.known), len(s.pending), n)
			}
			scanned += n
		}
		b.ReportMetric(float64(scanned)/b.Elapsed().Seconds(), "files/s")
	})
	b.Run("warm", func(b *testing.B) {
		s, err := New(opts, sp)
		if err != nil {
			b.Fatal(err)
		}
		s.fullScan(ctx)
		var scanned int
		for b.Loop() {
			s.fullScan(ctx)
			scanned += n
		}
		if len(s.known) != n || len(s.pending) != 0 {
			b.Fatalf("warm scan: %d known, %d pending", len(s.known), len(s.pending))
		}
		b.ReportMetric(float64(scanned)/b.Elapsed().Seconds(), "files/s")
	})
}

// BenchmarkTakeSmall measures intake of many small files: each round renames 200 ×
// 4 KiB files into a watched folder (settle 50ms, after: delete) and waits until the
// source has taken them all (each durably in the spool and deleted from the folder).
//
//	go test -run '^$' -bench BenchmarkTakeSmall -benchtime 3x ./agent/folder/
func BenchmarkTakeSmall(b *testing.B) {
	const files = 200
	root, stage := b.TempDir(), b.TempDir()
	sp := openSpool(b, spool.Options{})
	opts := Options{Name: "lab-inbox", Path: root, Settle: 50 * time.Millisecond}
	r := startSource(b, opts, sp)
	data := make([]byte, 4<<10)
	b.SetBytes(files * int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for j := range files {
			copy(data, fmt.Sprintf("round %d file %d;", i, j)) // distinct: no duplicates
			if err := os.WriteFile(filepath.Join(stage, fmt.Sprint(j)), data, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		want := r.counters().Taken + files
		b.StartTimer()
		for j := range files {
			name := fmt.Sprint(j)
			if err := os.Rename(filepath.Join(stage, name), filepath.Join(root, fmt.Sprint(i, "-", name))); err != nil {
				b.Fatal(err)
			}
		}
		testutil.WaitFor(b, time.Minute, "all files taken", func() bool { return r.counters().Taken >= want })
	}
	b.ReportMetric(float64(b.N*files)/b.Elapsed().Seconds(), "files/s")
}
