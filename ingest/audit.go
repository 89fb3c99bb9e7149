package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// auditFailuresPerSecond is how many failed-authentication (and refused
// connection) audit lines are written per second; the rest are counted and
// reported in one "left out" line.
const auditFailuresPerSecond = 5

// caller is who sent a request, as audit lines name it.
type caller struct {
	agent  string // the authenticated identity; "" in dev mode
	remote string // the peer's address
}

type callerKey struct{}

func withCaller(r *http.Request, agent string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{agent: agent, remote: r.RemoteAddr}))
}

func callerFrom(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// audit writes one line "msg=audit event=…" with the caller's identity and
// remote address and the attributes given (upload id, offset, size, digest,
// reason). Never file names or metadata values.
func (s *Server) audit(ctx context.Context, event string, attrs ...slog.Attr) {
	c := callerFrom(ctx)
	s.auditAs(ctx, event, c.agent, c.remote, attrs...)
}

func (s *Server) auditAs(ctx context.Context, event, agent, remote string, attrs ...slog.Attr) {
	all := make([]slog.Attr, 0, len(attrs)+3)
	all = append(all, slog.String("event", event), slog.String("agent", agent), slog.String("remote", remote))
	for _, a := range attrs {
		if a.Value.Kind() == slog.KindString && a.Value.String() == "" {
			continue
		}
		all = append(all, a)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "audit", all...)
}

// authFailure counts a refused credential or access (401, 403, a failed TLS
// handshake, someone else's upload) and audits it, at most
// auditFailuresPerSecond lines a second.
func (s *Server) authFailure(ctx context.Context, agent, remote, id, reason string) {
	s.metrics.authFailures.Inc()
	if !s.failureLines.allow(s, time.Now()) {
		return
	}
	s.auditAs(ctx, "auth_failure", agent, remote, slog.String("id", id), slog.String("reason", reason))
}

// auditLimited audits a refused connection, rate-limited like auth failures.
func (s *Server) auditLimited(reason, remote string) {
	if !s.failureLines.allow(s, time.Now()) {
		return
	}
	s.auditAs(context.Background(), "connection_refused", "", remote, slog.String("reason", reason))
}

// lineLimiter lets perSecond lines through in each one-second window and
// counts the others; the count is reported in a "left out" line when the
// next window opens (or by flush).
type lineLimiter struct {
	mu        sync.Mutex
	perSecond int
	window    time.Time
	n         int
	leftOut   int64
}

func (l *lineLimiter) allow(s *Server, now time.Time) bool {
	l.mu.Lock()
	if now.Sub(l.window) >= time.Second {
		left := l.leftOut
		l.window, l.n, l.leftOut = now, 0, 0
		if left > 0 {
			l.n++ // the report takes one of the window's lines
			l.mu.Unlock()
			s.reportLeftOut(left)
			l.mu.Lock()
		}
	}
	ok := l.n < l.perSecond
	if ok {
		l.n++
	} else {
		l.leftOut++
	}
	l.mu.Unlock()
	return ok
}

// flush reports lines left out in a window that has ended.
func (l *lineLimiter) flush(s *Server, now time.Time) {
	l.mu.Lock()
	if l.leftOut == 0 || now.Sub(l.window) < time.Second {
		l.mu.Unlock()
		return
	}
	left := l.leftOut
	l.window, l.n, l.leftOut = now, 1, 0
	l.mu.Unlock()
	s.reportLeftOut(left)
}

func (s *Server) reportLeftOut(n int64) {
	s.log.LogAttrs(context.Background(), slog.LevelWarn, "audit", slog.String("event", "left_out"),
		slog.Int64("count", n), slog.String("reason", fmt.Sprintf("auth failures and refused connections above %d lines/s; courier_ingest_auth_failures_total counts them all", auditFailuresPerSecond)))
}

// flushAudit reports left-out lines once a second until ctx ends.
func (s *Server) flushAudit(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.failureLines.flush(s, time.Now().Add(time.Hour))
			return
		case now := <-t.C:
			s.failureLines.flush(s, now)
		}
	}
}
