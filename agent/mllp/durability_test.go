package mllp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/edgecourier/courier/spool"
)

// gate holds every Receive of the real spool until released, and can make the
// next one fail as a broken disk would.
type gate struct {
	*spool.Spool
	entered chan struct{}
	release chan struct{}
	fail    chan error
}

func (g *gate) Receive(ctx context.Context, in spool.Intake, r io.Reader) (*spool.Item, error) {
	g.entered <- struct{}{}
	<-g.release
	select {
	case err := <-g.fail:
		return nil, err
	default:
	}
	return g.Spool.Receive(ctx, in, r)
}

// TestACKOnlyAfterTheSpoolHasIt: while the spool has not returned, the sender has
// no ACK; when the ACK arrives the message is already a committed item. A storage
// error is answered AE "send it again later", never AA.
func TestACKOnlyAfterTheSpoolHasIt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sp, err := spool.Open(ctx, spool.Options{Dir: t.TempDir(), Inspect: hl7Inspector()})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{Spool: sp, entered: make(chan struct{}, 1), release: make(chan struct{}), fail: make(chan error, 1)}
	l, err := Listen(g, Options{Name: "lab-feed", Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; sp.Close() }()

	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fr := newFrameReader(nc, maxACK)
	send := func(m []byte) {
		nc.Write(append(append([]byte{startBlock}, m...), endBlock, carriageR))
		<-g.entered
		nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if f, err := fr.next(nil); err == nil {
			t.Fatalf("ACK %q before the spool returned", f.data)
		}
		// The timed-out read left the connection usable; the frame reader kept nothing.
		nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	}

	m := msg("DUR-1", "2.5.1", "", "")
	send(m)
	if its, _ := sp.List(ctx, spool.ListFilter{}); len(its) != 0 {
		t.Fatal("item present before Receive ran")
	}
	g.release <- struct{}{}
	f, err := fr.next(nil)
	if err != nil {
		t.Fatal(err)
	}
	if ACKCode(f.data) != "AA" {
		t.Fatalf("ACK %q", f.data)
	}
	its, err := sp.List(ctx, spool.ListFilter{State: spool.StateReceived})
	if err != nil || len(its) != 1 || its[0].SHA256 != digest(m) {
		t.Fatalf("after AA the spool holds %v (%v), want the message", its, err)
	}

	g.fail <- errors.New("input/output error")
	send(msg("DUR-2", "2.5.1", "", ""))
	g.release <- struct{}{}
	if f, err = fr.next(nil); err != nil {
		t.Fatal(err)
	}
	fs := fieldsOf(t, f.data)
	if fs["MSA-1"] != "AE" || fs["ERR-8"] != "Courier could not store the message; not stored, send it again later" {
		t.Fatalf("storage error answered %q", f.data)
	}
}
