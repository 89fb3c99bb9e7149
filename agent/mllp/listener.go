package mllp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecourier/courier/agent/hl7"
	"github.com/edgecourier/courier/spool"
)

// Receiver is the part of the spool a listener needs.
type Receiver interface {
	Receive(ctx context.Context, in spool.Intake, r io.Reader) (*spool.Item, error)
	Reject(ctx context.Context, in spool.Intake, size int64, reason string) (*spool.Item, error)
}

// Defaults of Options.
const (
	DefaultMaxMessage   = 16 << 20
	DefaultMaxConns     = 64
	DefaultIdleTimeout  = 10 * time.Minute
	DefaultFrameTimeout = 2 * time.Minute
	DefaultWriteTimeout = 30 * time.Second
)

// Options configure one `kind: mllp` source.
type Options struct {
	Name   string // source name
	Listen string // host:port
	// TLS, when set, is required of every connection (ServerTLS builds one; with a
	// client CA it is mutual TLS).
	TLS *tls.Config
	// AllowedPeers are CIDRs (or single addresses) that may send; empty = any.
	// A frame from anyone else is answered AR/CR and the connection closed.
	AllowedPeers []string
	MaxMessage   int64 // bytes inside one frame; 0 = DefaultMaxMessage
	MaxConns     int   // open connections; more are closed at once; 0 = DefaultMaxConns
	// IdleTimeout closes a connection that starts no frame for this long;
	// FrameTimeout one whose frame is not complete this long after its start
	// (a slow or stuck sender); WriteTimeout one that does not take its ACK.
	IdleTimeout, FrameTimeout, WriteTimeout time.Duration
	Priority                                spool.Priority
	NoInspect                               bool // hl7: off
	// RetryInitial and RetryMax bound the backoff while a message whose sender
	// wants no answer waits for room in the spool [1s, 30s].
	RetryInitial, RetryMax time.Duration
	Logger                 *slog.Logger
	Metrics                *Metrics // nil: a private set (see Listener.Metrics)
}

// Listener is one MLLP source: it accepts connections, reads frames, hands each
// message to the spool and acknowledges it only once the spool has it.
type Listener struct {
	sp      Receiver
	opts    Options
	log     *slog.Logger
	m       *Metrics
	ln      net.Listener
	peers   []netip.Prefix
	closeLn sync.Once
	connSeq atomic.Uint64
}

// Listen checks opts and binds the listening socket (so a taken port fails at
// start, not later); nothing is accepted until Run.
func Listen(sp Receiver, opts Options) (*Listener, error) {
	if opts.Name == "" {
		return nil, errors.New("mllp: name must not be empty")
	}
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = DefaultMaxMessage
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.FrameTimeout <= 0 {
		opts.FrameTimeout = DefaultFrameTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.RetryInitial <= 0 {
		opts.RetryInitial = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 30 * time.Second
	}
	l := &Listener{sp: sp, opts: opts, log: opts.Logger, m: opts.Metrics}
	if l.log == nil {
		l.log = slog.Default()
	}
	l.log = l.log.With("source", opts.Name)
	if l.m == nil {
		l.m = NewMetrics()
	}
	peers, err := ParsePeers(opts.AllowedPeers)
	if err != nil {
		return nil, fmt.Errorf("mllp source %s: allowed_peers: %w", opts.Name, err)
	}
	l.peers = peers
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("mllp source %s: listen %s: %w", opts.Name, opts.Listen, err)
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
	}
	l.ln = ln
	return l, nil
}

// ParsePeers reads CIDRs ("10.1.0.0/16", "::1/128") or single addresses.
func ParsePeers(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("[%d]: %q is not a CIDR (10.0.0.0/8) or an address", i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ServerTLS loads a server certificate and, when clientCA is set, requires and
// verifies client certificates against it (mutual TLS).
func ServerTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.client_ca %s: no PEM certificates found", clientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Addr is the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Metrics are the listener's collectors (Options.Metrics, or its own).
func (l *Listener) Metrics() *Metrics { return l.m }

// Close releases the socket of a listener whose Run was never called.
func (l *Listener) Close() error {
	var err error
	l.closeLn.Do(func() { err = l.ln.Close() })
	return err
}

// Run accepts connections until ctx ends, then closes the socket and every
// connection (a message not yet acknowledged stays the sender's: it resends) and
// returns once all connection goroutines are done.
func (l *Listener) Run(ctx context.Context) error {
	defer l.Close()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	l.log.Info("mllp listening", "addr", l.ln.Addr().String(), "tls", l.opts.TLS != nil,
		"max_message", l.opts.MaxMessage, "allowed_peers", len(l.peers))
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, l.opts.MaxConns)
	pause := 5 * time.Millisecond
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait a little, never spin.
			l.log.Warn("mllp accept failed; retrying", "err", err)
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
			pause = min(pause*2, time.Second)
			continue
		}
		pause = 5 * time.Millisecond
		select {
		case sem <- struct{}{}:
		default:
			l.m.connections.WithLabelValues(l.opts.Name, "over_limit").Inc()
			l.log.Warn("mllp connection refused: max connections open", "peer", c.RemoteAddr().String(), "max", l.opts.MaxConns)
			c.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			l.serve(ctx, c)
		})
	}
}

func (l *Listener) allowed(a net.Addr) bool {
	if len(l.peers) == 0 {
		return true
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap()
	for _, p := range l.peers {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// serve reads frames from one connection, one at a time: each is stored and
// answered before the next is read, so ACKs go out in order.
func (l *Listener) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	peer := c.RemoteAddr().String()
	log := l.log.With("conn", l.connSeq.Add(1), "peer", peer)
	name := l.opts.Name
	if tc, ok := c.(*tls.Conn); ok {
		c.SetDeadline(time.Now().Add(l.opts.FrameTimeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			l.m.connections.WithLabelValues(name, "tls_failed").Inc()
			log.Warn("mllp TLS handshake failed", "err", err)
			return
		}
		c.SetDeadline(time.Time{})
	}
	allowed := l.allowed(c.RemoteAddr())
	max := l.opts.MaxMessage
	if allowed {
		l.m.connections.WithLabelValues(name, "accepted").Inc()
		log.Debug("mllp connection open")
	} else {
		l.m.connections.WithLabelValues(name, "peer_not_allowed").Inc()
		log.Warn("mllp connection from a peer outside allowed_peers: its first frame is refused, then the connection closed")
		max = headKeep // only its header is read
	}
	l.m.open.WithLabelValues(name).Inc()
	defer l.m.open.WithLabelValues(name).Dec()
	fr := newFrameReader(c, max)
	for {
		c.SetReadDeadline(time.Now().Add(l.opts.IdleTimeout))
		inFrame := false
		f, err := fr.next(func() {
			inFrame = true
			c.SetReadDeadline(time.Now().Add(l.opts.FrameTimeout))
		})
		if f.garbage > 0 {
			l.m.garbage.WithLabelValues(name).Add(float64(f.garbage))
			log.Warn("mllp bytes outside any frame skipped", "bytes", f.garbage)
		}
		if err != nil {
			l.closed(ctx, log, err, inFrame)
			return
		}
		l.m.bytes.WithLabelValues(name).Add(float64(f.size))
		ack, keep := l.handle(ctx, log, f, allowed, peer)
		if ack != nil {
			c.SetWriteDeadline(time.Now().Add(l.opts.WriteTimeout))
			out := make([]byte, 0, len(ack)+3)
			out = append(append(append(out, startBlock), ack...), endBlock, carriageR)
			if _, err := c.Write(out); err != nil {
				log.Warn("mllp ACK not delivered; the sender will resend and dedupe keeps one", "err", err)
				l.m.dropped.WithLabelValues(name, "error").Inc()
				return
			}
		}
		if !keep {
			l.m.dropped.WithLabelValues(name, "refused").Inc()
			return
		}
	}
}

// closed records why a connection ended.
func (l *Listener) closed(ctx context.Context, log *slog.Logger, err error, inFrame bool) {
	reason := "error"
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		reason = "shutdown"
	case errors.Is(err, io.EOF):
		reason = "eof"
	case errors.Is(err, errHalfFrame):
		reason = "half_frame"
	case errors.As(err, &ne) && ne.Timeout() && inFrame:
		reason = "frame_timeout"
	case errors.As(err, &ne) && ne.Timeout():
		reason = "idle_timeout"
	}
	l.m.dropped.WithLabelValues(l.opts.Name, reason).Inc()
	switch reason {
	case "eof", "shutdown", "idle_timeout":
		log.Debug("mllp connection closed", "reason", reason)
	default:
		log.Warn("mllp connection closed; a message not acknowledged stays with the sender", "reason", reason, "err", err)
	}
}

// handle decides one frame's fate and returns its ACK (nil: none wanted) and
// whether the connection stays open.
func (l *Listener) handle(ctx context.Context, log *slog.Logger, f frame, allowed bool, peer string) ([]byte, bool) {
	name := l.opts.Name
	h, hok := ParseHeader(f.data)
	if !hok {
		h = nil
	}
	in := l.intake(peer)
	var o Outcome
	var r *Reason
	switch {
	case !allowed:
		o, r = Refused, &Reason{errInternal, "the sending host is not in this source's allowed_peers; not stored"}
		l.m.messages.WithLabelValues(name, "refused_peer").Inc()
	case f.tooLarge:
		why := fmt.Sprintf("message of %d bytes exceeds max_message of %d bytes", f.size, l.opts.MaxMessage)
		l.reject(ctx, log, in, f.size, why)
		o, r = Refused, &Reason{errInternal, why + "; not stored"}
	case !hok || !isHL7(f.data):
		l.reject(ctx, log, in, f.size, "not an HL7 v2 message")
		o, r = Refused, &Reason{errSegmentSequence, "not an HL7 v2 message: the frame does not begin with a valid MSH segment; not stored"}
	default:
		o, r = l.store(ctx, log, in, f.data, h)
		if o != Accepted && ctx.Err() != nil {
			return nil, false // shutting down: no answer, the sender resends
		}
	}
	code, send := Decide(h, o)
	if !send {
		return nil, allowed
	}
	if o == Accepted {
		r = nil
	}
	l.m.acks.WithLabelValues(name, code).Inc()
	now := time.Now()
	return BuildACK(h, code, r, now, NewControlID(now)), allowed
}

func isHL7(b []byte) bool {
	_, err := hl7.Parse(b)
	return err == nil
}

// store hands a message to the spool. Accepted only after Receive returned nil
// (durable, or a recorded duplicate of a durable item).
func (l *Listener) store(ctx context.Context, log *slog.Logger, in spool.Intake, data []byte, h *Header) (Outcome, *Reason) {
	name := l.opts.Name
	wait := l.opts.RetryInitial
	for {
		it, err := l.sp.Receive(ctx, in, bytes.NewReader(data))
		if err == nil {
			l.m.messages.WithLabelValues(name, string(it.State)).Inc()
			log.Debug("mllp message spooled", "id", it.ID, "state", it.State, "sha256", it.SHA256, "size", it.Size)
			return Accepted, nil
		}
		if ctx.Err() != nil {
			return TryLater, nil
		}
		if errors.Is(err, spool.ErrTooLarge) { // the frame reader bounds first; this is a backstop
			why := fmt.Sprintf("message of %d bytes exceeds max_message of %d bytes", len(data), l.opts.MaxMessage)
			l.reject(ctx, log, in, int64(len(data)), why)
			return Refused, &Reason{errInternal, why + "; not stored"}
		}
		var r *Reason
		if errors.Is(err, spool.ErrFull) {
			r = &Reason{errInternal, "Courier's spool is full; not stored, send it again later"}
			log.Warn("mllp message not stored: spool full; the sender is told to try later", "size", len(data))
		} else {
			r = &Reason{errInternal, "Courier could not store the message; not stored, send it again later"}
			log.Error("mllp message not stored; the sender is told to try later", "size", len(data), "err", err)
		}
		l.m.messages.WithLabelValues(name, "try_later").Inc()
		if _, send := Decide(h, TryLater); send {
			return TryLater, r
		}
		// The sender wants no answer for an error, so it would never resend: hold
		// the message and stop reading this connection until it is stored.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return TryLater, nil
		}
		wait = min(wait*2, l.opts.RetryMax)
	}
}

// reject records a refused message (a rejected item and event): nothing is
// dropped without a trace. The sender also gets AR/CR, so a failure to record is
// only logged.
func (l *Listener) reject(ctx context.Context, log *slog.Logger, in spool.Intake, size int64, why string) {
	l.m.messages.WithLabelValues(l.opts.Name, "rejected").Inc()
	it, err := l.sp.Reject(ctx, in, size, why)
	if err != nil {
		log.Error("mllp refused message not recorded in the spool", "size", size, "reason", why, "err", err)
		return
	}
	log.Warn("mllp message refused", "id", it.ID, "size", size, "reason", why)
}

// intake describes a message for the spool. The peer address is its private
// SourceRef (the sender's host, not the patient's, but events do not need it).
func (l *Listener) intake(peer string) spool.Intake {
	return spool.Intake{
		Source:     l.opts.Name,
		SourceKind: "mllp",
		SourceRef:  "mllp://" + peer,
		Priority:   l.opts.Priority,
		MaxSize:    l.opts.MaxMessage,
		NoInspect:  l.opts.NoInspect,
	}
}
