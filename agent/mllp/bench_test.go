package mllp

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgecourier/courier/spool"
)

// oru1K is an ORU^R01 of about 1 KiB with a unique control id.
func oru1K(n int64) []byte {
	m := msg(fmt.Sprintf("BENCH%015d", n), "2.5.1", "", "")
	pad := 1024 - len(m) - len("NTE|1||\r")
	return append(m, []byte("NTE|1||"+strings.Repeat("x", max(pad, 0))+"\r")...)
}

// BenchmarkThroughput: messages per second acknowledged by a listener whose spool is
// real (fsync and SQLite commit before every ACK), over 1 and over 10 connections.
//
//	go test -run '^$' -bench Throughput ./agent/mllp/
func BenchmarkThroughput(b *testing.B) {
	for _, conns := range []int{1, 10} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			w := newWorld(b, spool.Options{}, Options{})
			clients := make([]*Client, conns)
			for i := range clients {
				clients[i] = w.dial()
			}
			var seq atomic.Int64
			b.SetBytes(1024)
			b.ResetTimer()
			var wg sync.WaitGroup
			var failed atomic.Int64
			for i, c := range clients {
				n := b.N / conns
				if i < b.N%conns {
					n++
				}
				wg.Go(func() {
					for range n {
						ack, err := c.Send(oru1K(seq.Add(1)), 0)
						if err != nil || ACKCode(ack) != "AA" {
							failed.Add(1)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if failed.Load() > 0 {
				b.Fatalf("%d connections failed", failed.Load())
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
