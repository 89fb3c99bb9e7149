package spool

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReceive measures intake: stream, two digests, fsync, rename, dir fsync, commit.
func BenchmarkReceive(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"1MiB", 1 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			s := openTest(b, Options{})
			data := make([]byte, size.n)
			rand.Read(data)
			ctx := context.Background()
			b.SetBytes(int64(size.n))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				binary.LittleEndian.PutUint64(data, uint64(i)) // no duplicates
				if _, err := s.Receive(ctx, Intake{Source: "bench"}, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		})
	}
}

// BenchmarkReceiveQueued measures intake with 30,000 items already queued and max_bytes
// set, so every intake checks the spooled total (issue 10: it used to sum every row).
func BenchmarkReceiveQueued(b *testing.B) {
	s := openTest(b, Options{MaxBytes: 1 << 50})
	ctx := context.Background()
	fillQueue(b, s, 30000)
	data := make([]byte, 1<<10)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.LittleEndian.PutUint64(data, uint64(i))
		if _, err := s.Receive(ctx, Intake{Source: "bench"}, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// fillQueue inserts n received rows in one transaction (rows only: the benchmark is
// about the database, and writing 30,000 files would dominate the set-up).
func fillQueue(b *testing.B, s *Spool, n int) {
	b.Helper()
	ctx := context.Background()
	err := s.write(ctx, "fill", func(tx *sql.Tx) error {
		for i := 0; i < n; i++ {
			it := newItem(Intake{Source: "fill"}, fmt.Sprintf("fill-%06d", i), s.nowUTC())
			it.Size, it.SHA256, it.State = 4096, fmt.Sprintf("%064x", i), StateReceived
			if err := insertItem(ctx, tx, it, true, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublish measures marking verified events published (and finishing their
// items), 256 events per round as the publisher drains them, in one batch.
func BenchmarkPublish(b *testing.B) { benchPublish(b, publishAll) }

// BenchmarkPublishEach is BenchmarkPublish with one transaction per event.
func BenchmarkPublishEach(b *testing.B) { benchPublish(b, publishEach) }

func benchPublish(b *testing.B, publish func(*testing.B, *Spool, []OutboxEvent)) {
	s := openTest(b, Options{})
	ctx := context.Background()
	data := make([]byte, 64)
	const batch = 256
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := 0; j < batch; j++ {
			binary.LittleEndian.PutUint64(data, uint64(i*batch+j))
			if _, err := s.Receive(ctx, Intake{Source: "bench"}, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			l, err := s.Lease(ctx, "w", time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.MarkVerified(ctx, l.ID, "w", "loc"); err != nil {
				b.Fatal(err)
			}
		}
		evs, err := s.Pending(ctx, DefaultSink, batch)
		if err != nil || len(evs) != batch {
			b.Fatalf("pending: %d, %v", len(evs), err)
		}
		b.StartTimer()
		publish(b, s, evs)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReceiveParallel measures intake of 4 KiB items from 8 concurrent callers
// (a folder source taking many small files at once): group commit shares the
// transaction and the folder fsyncs between them.
func BenchmarkReceiveParallel(b *testing.B) {
	s := openTest(b, Options{})
	ctx := context.Background()
	var n atomic.Uint64
	b.SetBytes(4 << 10)
	b.SetParallelism(4) // 4 × GOMAXPROCS callers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		data := make([]byte, 4<<10)
		rand.Read(data)
		for pb.Next() {
			binary.LittleEndian.PutUint64(data, n.Add(1)) // no duplicates
			if _, err := s.Receive(ctx, Intake{Source: "bench"}, bytes.NewReader(data)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}
