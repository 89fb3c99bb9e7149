package testutil

import (
	"net"
	"sync"
	"testing"
	"time"
)

func TestSyncBufferConcurrent(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := len(b.String()); n != 800 {
		t.Fatalf("got %d bytes, want 800", n)
	}
}

func TestFreePortIsListenable(t *testing.T) {
	addr := FreePort(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreePort gave %s, which cannot be listened on: %v", addr, err)
	}
	ln.Close()
}

func TestWaitForReturnsOnceTrue(t *testing.T) {
	n := 0
	WaitFor(t, 10*time.Second, "third look", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}
