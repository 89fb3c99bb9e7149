package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Defaults for NetOptions: what one courier-ingest lets a client hold.
const (
	DefaultMaxConns          = 1024
	DefaultMaxConnsPerAddr   = 64
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultMinBodyRate       = 8 << 10 // bytes/s: 64 kbit/s, a small share of a slow line
	DefaultMaxBodyPause      = 60 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	// ShutdownGrace is how long Serve lets requests in flight finish.
	ShutdownGrace = 30 * time.Second
)

// NetOptions bounds what a client can hold of the server: connections, the
// time a connection may idle or take to send its headers, header size, and
// the pace of a request body. Zero values take the defaults above; a
// negative count or duration switches that limit off.
type NetOptions struct {
	// MaxConns caps connections in total; more wait in the kernel's accept
	// queue until one closes (golang.org/x/net/netutil.LimitListener style).
	MaxConns int
	// MaxConnsPerAddr caps connections from one remote IP address; more are
	// closed at once. Behind a proxy or load balancer every connection comes
	// from its address: switch this off (negative) or raise it there.
	MaxConnsPerAddr int
	// ReadHeaderTimeout is the time a client has for the TLS handshake and
	// a request's headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection without a request this long.
	IdleTimeout time.Duration
	// WriteTimeout is the time one response write may block (a client that
	// does not read its answers).
	WriteTimeout time.Duration
	// MinBodyRate and MaxBodyPause pace request bodies: a body must keep an
	// average of MinBodyRate bytes/s (measured from MaxBodyPause after its
	// start, so a slow start is forgiven) and never pause longer than
	// MaxBodyPause. A slower body is cut off (408 ERR_READ_TIMEOUT for a held
	// chunk; the bytes a streamed PATCH delivered stay).
	MinBodyRate  int64
	MaxBodyPause time.Duration
	// MaxHeaderBytes bounds request headers; larger → 431.
	MaxHeaderBytes int
}

func (n *NetOptions) setDefaults() {
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&n.MaxConns, DefaultMaxConns)
	defInt(&n.MaxConnsPerAddr, DefaultMaxConnsPerAddr)
	defInt(&n.MaxHeaderBytes, DefaultMaxHeaderBytes)
	defDur(&n.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defDur(&n.IdleTimeout, DefaultIdleTimeout)
	defDur(&n.WriteTimeout, DefaultWriteTimeout)
	defDur(&n.MaxBodyPause, DefaultMaxBodyPause)
	if n.MinBodyRate == 0 {
		n.MinBodyRate = DefaultMinBodyRate
	}
}

func positive(d time.Duration) time.Duration { return max(d, 0) }

// HTTPServer returns an http.Server for h with the timeouts and header limit
// of Options.Net. The body pace is enforced by Handler itself.
func (s *Server) HTTPServer(h http.Handler) *http.Server {
	n := s.opts.Net
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: positive(n.ReadHeaderTimeout),
		IdleTimeout:       positive(n.IdleTimeout),
		MaxHeaderBytes:    max(n.MaxHeaderBytes, 0),
		ErrorLog:          log.New(&serverErrorLog{s: s}, "", 0),
		// Not WriteTimeout: that would also bound the time a slow line takes to
		// send its body. Handler sets a write deadline per response instead.
	}
}

// Serve serves Handler on ln — capped by LimitListener, in TLS when tlsConfig
// is set — until ctx ends, then shuts down, letting requests in flight finish
// for ShutdownGrace. Without metricsLn, /metrics is served on ln; with it,
// /metrics is served there only (ServeMetrics) and not on the upload port.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsConfig *tls.Config, metricsLn net.Listener) error {
	h := s.Handler()
	if metricsLn != nil {
		h = s.UploadHandler()
	}
	hs := s.HTTPServer(h)
	ln = s.LimitListener(ln)
	if tlsConfig != nil {
		hs.TLSConfig = tlsConfig
		ln = tls.NewListener(ln, tlsConfig)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntil(gctx, hs, ln) })
	if metricsLn != nil {
		ms := s.HTTPServer(s.MetricsHandler())
		g.Go(func() error { return serveUntil(gctx, ms, metricsLn) })
	}
	return g.Wait()
}

// serveUntil runs hs on ln until ctx ends (nil) or serving fails.
func serveUntil(ctx context.Context, hs *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if err != nil {
		_ = hs.Close()
		return fmt.Errorf("shut down %s: %w", ln.Addr(), err)
	}
	return nil
}

// serverErrorLog receives net/http's own log lines. TLS handshake failures
// count as authentication failures (and are audited, rate-limited); the rest
// (accept errors, panics in a handler) are logged as warnings.
type serverErrorLog struct{ s *Server }

func (e *serverErrorLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	if rest, ok := strings.CutPrefix(line, "http: TLS handshake error from "); ok {
		remote, reason, _ := strings.Cut(rest, ": ")
		// A client that connects and leaves without a word (a TCP health check,
		// a port scan) did not fail a handshake; anything else did.
		if reason != "EOF" {
			e.s.authFailure(context.Background(), "", remote, "", "tls handshake: "+reason)
		}
		return len(p), nil
	}
	e.s.log.Warn("http server: " + line)
	return len(p), nil
}

// LimitListener caps the connections ln hands out: in total (Accept waits
// for one to close) and per remote IP address (more are closed at once).
// Serve applies it; wrap the listener yourself when running HTTPServer by hand.
func (s *Server) LimitListener(ln net.Listener) net.Listener {
	n := s.opts.Net
	l := &limitListener{Listener: ln, perAddr: n.MaxConnsPerAddr, byAddr: map[string]int{}, s: s, done: make(chan struct{})}
	if n.MaxConns > 0 {
		l.sem = make(chan struct{}, n.MaxConns)
	}
	return l
}

type limitListener struct {
	net.Listener
	s       *Server
	sem     chan struct{} // nil: no total cap
	perAddr int           // <= 0: no cap per address
	done    chan struct{}
	close   sync.Once

	mu     sync.Mutex
	byAddr map[string]int
	open   int
	peak   int
}

func (l *limitListener) acquire() bool {
	if l.sem == nil {
		return true
	}
	select {
	case l.sem <- struct{}{}:
		return true
	default:
	}
	l.s.metrics.connLimited.WithLabelValues("total").Inc()
	select {
	case l.sem <- struct{}{}:
		return true
	case <-l.done:
		return false
	}
}

func (l *limitListener) release() {
	if l.sem != nil {
		<-l.sem
	}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		if !l.acquire() {
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			l.release()
			return nil, err
		}
		host := remoteHost(c.RemoteAddr().String())
		l.mu.Lock()
		if l.perAddr > 0 && l.byAddr[host] >= l.perAddr {
			l.mu.Unlock()
			l.release()
			_ = c.Close()
			l.s.metrics.connLimited.WithLabelValues("per_address").Inc()
			l.s.auditLimited("connection refused: too many from one address", host)
			continue
		}
		l.byAddr[host]++
		l.open++
		l.peak = max(l.peak, l.open)
		l.mu.Unlock()
		l.s.metrics.connOpen.Inc()
		return &limitConn{Conn: c, l: l, host: host}, nil
	}
}

func (l *limitListener) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// stats returns the connections open now and the most ever open at once.
func (l *limitListener) stats() (open, peak int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.peak
}

type limitConn struct {
	net.Conn
	l    *limitListener
	host string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.byAddr[c.host]--; c.l.byAddr[c.host] <= 0 {
			delete(c.l.byAddr, c.host)
		}
		c.l.open--
		c.l.mu.Unlock()
		c.l.s.metrics.connOpen.Dec()
		c.l.release()
	})
	return err
}

func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// errBodyTooSlow is why a request body was cut off. It is a timeout for
// net.Error's sake, so tusd reports it like its own read timeout.
type errBodyTooSlow struct{ msg string }

func (e errBodyTooSlow) Error() string   { return e.msg }
func (e errBodyTooSlow) Timeout() bool   { return true }
func (e errBodyTooSlow) Temporary() bool { return false }

// pacedBody enforces NetOptions' body pace with read deadlines on the
// connection: each read must bring bytes within MaxBodyPause, and by then
// the body must have kept MinBodyRate on average since MaxBodyPause after
// its start.
type pacedBody struct {
	body  io.ReadCloser
	ctl   *http.ResponseController
	rate  int64
	pause time.Duration
	start time.Time
	n     int64
	eof   bool
	// extend pushes the response's write deadline out while the body moves.
	extend func()
	// lastExtend throttles extend to once a second.
	lastExtend time.Time
	// onSlow is called once when the body is cut off.
	onSlow func(msg string)
}

func (b *pacedBody) tooSlow(why string, at time.Time) error {
	e := errBodyTooSlow{fmt.Sprintf("request body too slow: %s (%d bytes in %s)", why, b.n, at.Sub(b.start).Round(time.Millisecond))}
	if b.onSlow != nil {
		b.onSlow(e.msg)
		b.onSlow = nil
	}
	return e
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.eof || len(p) == 0 {
		// After EOF the server reads the connection in the background; a
		// deadline set now would cancel the request when it passed.
		return b.body.Read(p)
	}
	now := time.Now()
	if b.start.IsZero() {
		b.start = now
	}
	var deadline time.Time
	why := ""
	if b.pause > 0 {
		deadline, why = now.Add(b.pause), fmt.Sprintf("no data for %s", b.pause)
	}
	if b.rate > 0 {
		due := b.start.Add(max(b.pause, 0) + time.Duration(float64(b.n)/float64(b.rate)*float64(time.Second)))
		if deadline.IsZero() || due.Before(deadline) {
			deadline, why = due, fmt.Sprintf("slower than %d bytes/s on average", b.rate)
		}
	}
	if !deadline.IsZero() {
		if !deadline.After(now) {
			return 0, b.tooSlow(why, now)
		}
		_ = b.ctl.SetReadDeadline(deadline) // not supported (a recorder): unpaced
	}
	n, err := b.body.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	if n > 0 && b.extend != nil && time.Since(b.lastExtend) > time.Second {
		b.lastExtend = time.Now()
		b.extend()
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return n, b.tooSlow(why, time.Now())
	}
	return n, err
}

func (b *pacedBody) Close() error { return b.body.Close() }

// deadlineWriter gives each response write WriteTimeout from the moment the
// handler starts answering (not from the request's start, which may have
// been a long upload ago).
type deadlineWriter struct {
	http.ResponseWriter
	ctl     *http.ResponseController
	timeout time.Duration
	last    atomic.Int64
}

func (d *deadlineWriter) bump() {
	now := time.Now()
	if now.UnixNano()-d.last.Load() < int64(time.Second) {
		return
	}
	d.last.Store(now.UnixNano())
	_ = d.ctl.SetWriteDeadline(now.Add(d.timeout))
}

func (d *deadlineWriter) WriteHeader(code int) {
	d.bump()
	d.ResponseWriter.WriteHeader(code)
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.bump()
	return d.ResponseWriter.Write(p)
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// paced wraps h so request bodies keep NetOptions' pace and responses get a
// write deadline.
func (s *Server) paced(h http.Handler) http.Handler {
	n := s.opts.Net
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctl := http.NewResponseController(w)
		if n.WriteTimeout > 0 {
			dw := &deadlineWriter{ResponseWriter: w, ctl: ctl, timeout: n.WriteTimeout}
			_ = ctl.SetWriteDeadline(time.Now().Add(n.WriteTimeout))
			dw.last.Store(time.Now().UnixNano())
			w = dw
		}
		if r.Body != nil && r.Body != http.NoBody && (n.MinBodyRate > 0 || n.MaxBodyPause > 0) {
			pb := &pacedBody{body: r.Body, ctl: ctl, rate: max(n.MinBodyRate, 0), pause: n.MaxBodyPause}
			if n.WriteTimeout > 0 {
				pb.extend = func() { _ = ctl.SetWriteDeadline(time.Now().Add(n.WriteTimeout)) }
			}
			pb.onSlow = func(msg string) {
				s.metrics.slowBodies.Inc()
				id := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
				s.auditAs(r.Context(), "body_too_slow", "", r.RemoteAddr, slog.String("id", id), slog.String("reason", msg))
			}
			r.Body = pb
		}
		h.ServeHTTP(w, r)
	})
}
