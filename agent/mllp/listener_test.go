package mllp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgecourier/courier/spool"
)

func wantCode(t *testing.T, ack []byte, code string) map[string]string {
	t.Helper()
	f := fieldsOf(t, ack)
	if f["MSA-1"] != code {
		t.Fatalf("MSA-1 %q, want %s; ACK %q", f["MSA-1"], code, ack)
	}
	return f
}

// finish takes an item through upload and publication as the uploader and the
// publisher would, so the spool frees its bytes.
func (w *world) finish(id string) {
	w.t.Helper()
	ctx := context.Background()
	it, err := w.sp.Lease(ctx, "test", time.Minute)
	if err != nil || it.ID != id {
		w.t.Fatalf("lease: %v (got %v, want %s)", err, it, id)
	}
	if err := w.sp.MarkVerified(ctx, id, "test", "http://127.0.0.1/files/"+id); err != nil {
		w.t.Fatal(err)
	}
	evs, err := w.sp.Pending(ctx, "file", 100)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.ItemID == id {
			if err := w.sp.MarkPublished(ctx, ev.Seq); err != nil {
				w.t.Fatal(err)
			}
		}
	}
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSpoolFullAnswersAEThenAA: while the spool is full the sender is told AE
// (CE in enhanced mode) "try later"; once space frees the same message is AA and
// stored once. A sender that wants no ACK at all is held (not answered, not
// dropped) until there is room.
func TestSpoolFullAnswersAEThenAA(t *testing.T) {
	w := newWorld(t, spool.Options{MaxBytes: 100}, Options{RetryInitial: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	c := w.dial()
	a := msg("FULL-A", "2.5.1", "", "")
	wantCode(t, w.send(c, a), "AA") // an empty spool takes anything
	b := msg("FULL-B", "2.5.1", "", "")
	f := wantCode(t, w.send(c, b), "AE")
	if f["MSA-2"] != "FULL-B" || !strings.Contains(f["ERR-8"], "spool is full") || !strings.Contains(f["ERR-8"], "again later") {
		t.Errorf("AE does not say try later: %q", f)
	}
	wantCode(t, w.send(c, msg("FULL-B2", "2.5.1", "AL", "NE")), "CE")
	if n := len(w.items("")); n != 1 {
		t.Fatalf("%d items after refusals for a full spool, want 1", n)
	}
	w.finish(w.items(spool.StateReceived)[0].ID)
	wantCode(t, w.send(c, b), "AA")
	if got := w.stored(); got[digest(b)] != 1 || len(got) != 1 {
		t.Fatalf("spool holds %v, want B once", got)
	}

	// NE/NE asks for no answer: held while full, stored once there is room.
	nc, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	quiet := msg("FULL-C", "2.8", "NE", "NE")
	nc.Write(append(append([]byte{startBlock}, quiet...), endBlock, carriageR))
	waitUntil(t, "the held message to be retried", func() bool {
		return testutil.ToFloat64(w.l.Metrics().messages.WithLabelValues("lab-feed", "try_later")) >= 4
	})
	if w.stored()[digest(quiet)] != 0 {
		t.Fatal("stored while the spool was full")
	}
	w.finish(w.items(spool.StateReceived)[0].ID)
	waitUntil(t, "the held NE/NE message in the spool", func() bool { return w.stored()[digest(quiet)] == 1 })
	nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := nc.Read(make([]byte, 1)); n != 0 {
		t.Error("an NE/NE message was answered")
	}
}

func bigMessage(control string, size int) []byte {
	m := msg(control, "2.5.1", "", "")
	return append(m, []byte("OBX|2|ED|PDF^Report||^AP^PDF^Base64^"+strings.Repeat("QUJD", size/4)+"||||||F\r")...)
}

// TestRefusedAndBrokenInput: oversize, not HL7, garbage between frames, half a
// frame then a disconnect, a slowloris sender and an idle connection neither
// crash nor hang the listener; each gets a clear ACK or a close, and refusals
// are recorded as rejected items.
func TestRefusedAndBrokenInput(t *testing.T) {
	w := newWorld(t, spool.Options{}, Options{MaxMessage: 4096, FrameTimeout: 300 * time.Millisecond, IdleTimeout: 500 * time.Millisecond})
	m := w.l.Metrics()
	c := w.dial()

	t.Run("oversize", func(t *testing.T) {
		f := wantCode(t, w.send(c, bigMessage("BIG", 8192)), "AR")
		if f["MSA-2"] != "BIG" || !strings.Contains(f["ERR-8"], "exceeds max_message of 4096 bytes") {
			t.Errorf("AR does not name the reason: %q", f)
		}
		wantCode(t, w.send(c, msg("AFTER-BIG", "2.5.1", "", "")), "AA") // the connection goes on
	})
	t.Run("not HL7", func(t *testing.T) {
		f := wantCode(t, w.send(c, []byte("PDF-1.7 this is not an HL7 message MRN 4711")), "AR")
		if f["MSA-2"] != "" || f["ERR-3"] != "100^Segment sequence error^HL70357" || strings.Contains(string(f["ERR-8"]), "4711") {
			t.Errorf("refusal of non-HL7: %q", f)
		}
		wantCode(t, w.send(c, []byte("MSH|^~\\&|A|B|C|D|x||")), "AR") // MSH without a message type
	})
	rej := w.items(spool.StateRejected)
	if len(rej) != 3 {
		t.Fatalf("%d rejected items, want 3 (oversize, two not HL7)", len(rej))
	}
	for _, it := range rej {
		if it.SourceKind != "mllp" || it.Reason == "" || strings.Contains(it.Reason, "4711") {
			t.Errorf("rejected item %s: kind %q reason %q", it.ID, it.SourceKind, it.Reason)
		}
	}

	t.Run("garbage between frames is skipped and counted", func(t *testing.T) {
		nc, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		g := msg("AFTER-GARBAGE", "2.5.1", "", "")
		nc.Write(append(append([]byte("GARBAGE\x00\xff\r\n"+"\x0b"), g...), endBlock, carriageR))
		fr := newFrameReader(nc, maxACK)
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		ack, err := fr.next(nil)
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, ack.data, "AA")
		if n := testutil.ToFloat64(m.garbage.WithLabelValues("lab-feed")); n != 9 {
			t.Errorf("garbage bytes counted %v, want 9 (CR/LF not counted)", n)
		}
	})
	t.Run("half a frame then disconnect", func(t *testing.T) {
		nc, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		half := msg("HALF", "2.5.1", "", "")
		nc.Write(append([]byte{startBlock}, half[:len(half)/2]...))
		nc.Close()
		waitUntil(t, "the half frame to be noticed", func() bool {
			return testutil.ToFloat64(m.dropped.WithLabelValues("lab-feed", "half_frame")) == 1
		})
		if w.stored()[digest(half)] != 0 {
			t.Error("half a message was stored")
		}
	})
	t.Run("slowloris is cut off, others are served meanwhile", func(t *testing.T) {
		nc, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			nc.Write([]byte{startBlock})
			for i := 0; i < 400; i++ { // one byte every 25ms: at most 10s
				if _, err := nc.Write([]byte("M")); err != nil {
					return
				}
				time.Sleep(25 * time.Millisecond)
			}
		}()
		wantCode(t, w.send(w.dial(), msg("BESIDE-SLOW", "2.5.1", "", "")), "AA")
		waitClosed(t, nc, 10*time.Second)
		<-done
		if n := testutil.ToFloat64(m.dropped.WithLabelValues("lab-feed", "frame_timeout")); n != 1 {
			t.Errorf("frame timeouts %v, want 1", n)
		}
	})
	t.Run("idle connection is closed", func(t *testing.T) {
		nc, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		waitClosed(t, nc, 10*time.Second)
	})
	if n := len(w.items(spool.StateReceived)); n != 3 {
		t.Errorf("%d received items, want 3 (after-big, after-garbage, beside-slow)", n)
	}
}

// TestDuplicateIsAcknowledged: a resend (same MSH-3/4/10, same bytes apart from
// MSH-7) is safe, so it is acknowledged AA; the spool records it as a duplicate
// with its duplicate event, and stores the message once.
func TestDuplicateIsAcknowledged(t *testing.T) {
	w := newWorld(t, spool.Options{}, Options{})
	c := w.dial()
	m1 := msg("DUP-1", "2.5.1", "AL", "NE")
	wantCode(t, w.send(c, m1), "CA")
	m2 := bytes.Replace(m1, []byte("20260815081500+0100"), []byte("20260815091500+0100"), 1)
	wantCode(t, w.send(c, m2), "CA")
	if n := len(w.items(spool.StateReceived)); n != 1 {
		t.Fatalf("%d received items, want 1", n)
	}
	dups := w.items(spool.StateDuplicate)
	if len(dups) != 1 {
		t.Fatalf("%d duplicate items, want 1", len(dups))
	}
	evs, err := w.sp.Pending(context.Background(), "file", 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		found = found || (ev.ItemID == dups[0].ID && ev.Type == spool.EventDuplicate)
	}
	if !found {
		t.Error("no duplicate event in the outbox")
	}
	if got := testutil.ToFloat64(w.l.Metrics().messages.WithLabelValues("lab-feed", "duplicate")); got != 1 {
		t.Errorf("duplicate metric %v", got)
	}
}

// TestPeersAndConnectionLimit: a peer outside allowed_peers gets AR naming why,
// then the connection closes and nothing is stored; connections over the limit
// are closed at once.
func TestPeersAndConnectionLimit(t *testing.T) {
	t.Run("outside allowed_peers", func(t *testing.T) {
		w := newWorld(t, spool.Options{}, Options{AllowedPeers: []string{"10.0.0.0/8", "192.168.1.7"}})
		nc, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write(append(append([]byte{startBlock}, msg("PEER", "2.5.1", "", "")...), endBlock, carriageR))
		out := waitClosed(t, nc, 10*time.Second)
		f := wantCode(t, unframe(out), "AR")
		if !strings.Contains(f["ERR-8"], "allowed_peers") || f["MSA-2"] != "PEER" {
			t.Errorf("refusal does not name allowed_peers: %q", f)
		}
		if n := len(w.items("")); n != 0 {
			t.Errorf("%d items from a refused peer", n)
		}
	})
	t.Run("inside allowed_peers", func(t *testing.T) {
		w := newWorld(t, spool.Options{}, Options{AllowedPeers: []string{"127.0.0.0/8"}})
		wantCode(t, w.send(w.dial(), msg("PEER-OK", "2.5.1", "", "")), "AA")
	})
	t.Run("bad CIDR", func(t *testing.T) {
		_, err := Listen(nil, Options{Name: "x", Listen: "127.0.0.1:0", AllowedPeers: []string{"10.0.0.0/33"}})
		if err == nil || !strings.Contains(err.Error(), "allowed_peers: [0]") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("max connections", func(t *testing.T) {
		w := newWorld(t, spool.Options{}, Options{MaxConns: 2})
		c1, c2 := w.dial(), w.dial()
		wantCode(t, w.send(c1, msg("MC1", "2.5.1", "", "")), "AA")
		wantCode(t, w.send(c2, msg("MC2", "2.5.1", "", "")), "AA")
		nc, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		waitClosed(t, nc, 10*time.Second)
		c1.Close()
		waitUntil(t, "a free connection slot", func() bool {
			c, err := Dial(context.Background(), w.addr, nil)
			if err != nil {
				return false
			}
			defer c.Close()
			ack, err := c.Send(msg("MC3", "2.5.1", "", ""), 5*time.Second)
			return err == nil && ACKCode(ack) == "AA"
		})
	})
}

// TestMutualTLS: with a client CA, a client without a certificate is refused in
// the handshake; one with a certificate the CA signed is served.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "test ca", true)
	srv, srvKey := newCert(t, ca, caKey, "courier", false)
	cli, cliKey := newCert(t, ca, caKey, "lab", false)
	write := func(name string, der []byte, typ string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte { b, _ := x509.MarshalECPrivateKey(k); return b }
	tc, err := ServerTLS(write("srv.pem", srv.Raw, "CERTIFICATE"), write("srv.key", keyDER(srvKey), "EC PRIVATE KEY"),
		write("ca.pem", ca.Raw, "CERTIFICATE"))
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, spool.Options{}, Options{TLS: tc})
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	c, err := Dial(context.Background(), w.addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err == nil {
		_, err = c.Send(msg("NOCERT", "2.5.1", "", ""), 10*time.Second)
		c.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate was served")
	}
	good := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: [][]byte{cli.Raw}, PrivateKey: cliKey}}}
	c, err = Dial(context.Background(), w.addr, good)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ack, err := c.Send(msg("TLS", "2.5.1", "", ""), 10*time.Second)
	if err != nil || ACKCode(ack) != "AA" {
		t.Fatalf("mutual TLS: %v %q", err, ack)
	}
	if n := testutil.ToFloat64(w.l.Metrics().connections.WithLabelValues("lab-feed", "tls_failed")); n != 1 {
		t.Errorf("tls_failed %v, want 1", n)
	}
}

func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:        isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// unframe strips one MLLP frame's start and end blocks.
func unframe(b []byte) []byte {
	return bytes.TrimSuffix(bytes.TrimPrefix(b, []byte{startBlock}), []byte{endBlock, carriageR})
}

// TestMetrics: messages, bytes, ACK codes and open connections are counted.
func TestMetrics(t *testing.T) {
	w := newWorld(t, spool.Options{}, Options{MaxMessage: 2048})
	m := w.l.Metrics()
	c := w.dial()
	a := msg("MET-1", "2.5.1", "", "")
	wantCode(t, w.send(c, a), "AA")
	wantCode(t, w.send(c, msg("MET-2", "2.5.1", "AL", "")), "CA")
	wantCode(t, w.send(c, bigMessage("MET-3", 4096)), "AR")
	if n := testutil.ToFloat64(m.open.WithLabelValues("lab-feed")); n != 1 {
		t.Errorf("open connections %v, want 1", n)
	}
	for code, want := range map[string]float64{"AA": 1, "CA": 1, "AR": 1, "AE": 0} {
		if n := testutil.ToFloat64(m.acks.WithLabelValues("lab-feed", code)); n != want {
			t.Errorf("acks{%s} = %v, want %v", code, n, want)
		}
	}
	if n := testutil.ToFloat64(m.messages.WithLabelValues("lab-feed", "received")); n != 2 {
		t.Errorf("messages{received} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(m.messages.WithLabelValues("lab-feed", "rejected")); n != 1 {
		t.Errorf("messages{rejected} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.bytes.WithLabelValues("lab-feed")); n < float64(len(a))+4096 {
		t.Errorf("bytes = %v, want at least %d", n, len(a)+4096)
	}
	c.Close()
	waitUntil(t, "the connection gauge back to 0", func() bool { return testutil.ToFloat64(m.open.WithLabelValues("lab-feed")) == 0 })
}
