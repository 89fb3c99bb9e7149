package spool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"testing"
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
