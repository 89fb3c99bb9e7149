package uploader

import (
	"context"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"time"
)

// Link states, one of them in LinkStatus.State.
const (
	LinkUp     = "up"     // uploads go ahead
	LinkDown   = "down"   // no connection, TLS failure, a failing server or proxy: probed until it is back
	LinkPaused = "paused" // the server refuses us (401/403) or cannot be used as configured: needs a person
)

// Older names of the link states.
//
// Deprecated: use LinkUp and LinkDown.
const (
	LinkOK      = LinkUp
	LinkOffline = LinkDown
)

// Causes of a link that is not up, in LinkStatus.Cause (a metric label, a hint
// for the status page).
const (
	CauseNetwork = "network" // no connection, connection reset, timeout
	CauseTLS     = "tls"     // certificate or handshake failure (upload.tls)
	CauseServer  = "server"  // 5xx from OPTIONS or for several files, a full store at the server
	CauseAuth    = "auth"    // 401/403 (upload.bearer_token_file, client certificate)
	CauseConfig  = "config"  // the server cannot be used as configured (no checksums, wrong endpoint, redirects, a foreign Location, chunk too large)
)

// LinkStatus is the one state of the connection to the server, computed by the
// uploader for `courier status`, /readyz, metrics, the MQTT status and the log.
type LinkStatus struct {
	State     string    `json:"state"`                // LinkUp, LinkDown or LinkPaused
	Cause     string    `json:"cause,omitempty"`      // Cause* while down or paused
	Reason    string    `json:"reason,omitempty"`     // why it is down or paused; "" while up
	LastError string    `json:"last_error,omitempty"` // the last link failure, kept after recovery
	Since     time.Time `json:"since"`                // when State was entered
	NextProbe time.Time `json:"next_probe,omitzero"`  // while down or paused: when the link is tried again
}

// Link reports the state of the connection to the server.
func (u *Uploader) Link() LinkStatus { return u.link.status() }

// WatchLink calls fn with the link status on every change of state, cause or
// reason, in order, from the goroutine that changed it: fn must return quickly.
// The last call always carries the current status. stop ends the calls.
func (u *Uploader) WatchLink(fn func(LinkStatus)) (stop func()) { return u.link.watch(fn) }

// link is the shared view of the connection. While it is not up, workers hold
// back (hold) and one of them at a time probes it when the probe is due.
type link struct {
	log *slog.Logger

	mu        sync.Mutex
	st        LinkStatus
	failures  int       // link failures since it was last up
	probing   bool      // a worker holds the probe token
	lastProbe time.Time // when the last probe began
	changed   chan struct{}
	subs      map[int]func(LinkStatus)
	nextSub   int
	// serverErrs: per 5xx status, the files (and "OPTIONS") that got it since the
	// last verified upload. Once two saw the same code it is the server or a proxy
	// in front of it, not the files.
	serverErrs map[int]map[string]bool

	notifyMu sync.Mutex
	notified LinkStatus
}

func newLink(log *slog.Logger) *link {
	now := time.Now()
	return &link{log: log, st: LinkStatus{State: LinkUp, Since: now}, changed: make(chan struct{}),
		subs: map[int]func(LinkStatus){}, serverErrs: map[int]map[string]bool{}, notified: LinkStatus{State: LinkUp, Since: now}}
}

func (l *link) status() LinkStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

func (l *link) watch(fn func(LinkStatus)) func() {
	l.mu.Lock()
	id := l.nextSub
	l.nextSub++
	l.subs[id] = fn
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.subs, id)
		l.mu.Unlock()
	}
}

// broadcastLocked wakes every worker waiting in hold. l.mu is held.
func (l *link) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// notify calls the watchers with the current status if it differs from the last
// one they saw. Serialised, and reading the status inside, so the last call
// always carries the latest state.
func (l *link) notify() {
	l.notifyMu.Lock()
	defer l.notifyMu.Unlock()
	l.mu.Lock()
	st := l.st
	subs := make([]func(LinkStatus), 0, len(l.subs))
	for _, fn := range l.subs {
		subs = append(subs, fn)
	}
	l.mu.Unlock()
	prev := l.notified
	if st.State == prev.State && st.Cause == prev.Cause && st.Reason == prev.Reason && st.Since.Equal(prev.Since) {
		return
	}
	l.notified = st
	for _, fn := range subs {
		fn(st)
	}
}

// up records that the server answered as it should. It ends the probe.
func (l *link) up() {
	l.mu.Lock()
	l.probing = false
	l.failures = 0
	if l.st.State == LinkUp {
		l.mu.Unlock()
		return
	}
	prev := l.st
	now := time.Now()
	l.st = LinkStatus{State: LinkUp, Since: now, LastError: prev.LastError}
	l.broadcastLocked()
	l.mu.Unlock()
	l.log.Info("upload link up again", "was", prev.State, "cause", prev.Cause, "for", now.Sub(prev.Since).Round(time.Second).String())
	l.notify()
}

// fail records a failure of the whole link. A probe's failure (or the first one
// while the link was up) ends the probe and sets when to probe next, backing off;
// the failures of uploads that were already under way when the link broke only
// update the reason, so a burst of them does not stretch the backoff. One WARN is
// logged when the state or its cause changes, not on every failure.
func (l *link) fail(state, cause, reason string, probe bool, backoff func(n int) time.Duration, retryAfter time.Duration) {
	l.mu.Lock()
	now := time.Now()
	if probe || l.st.State == LinkUp {
		l.probing = false
		l.failures++
		l.st.NextProbe = now.Add(max(backoff(l.failures), retryAfter))
	}
	changed := l.st.State != state || l.st.Cause != cause
	if l.st.State != state {
		l.st.Since = now
	}
	l.st.State, l.st.Cause, l.st.Reason, l.st.LastError = state, cause, reason, reason
	l.broadcastLocked()
	l.mu.Unlock()
	if changed {
		if state == LinkPaused {
			l.log.Warn("uploads paused: the server refuses us or cannot be used as configured", "cause", cause, "reason", reason)
		} else {
			l.log.Warn("upload link down; files wait and the link is probed until it is back", "cause", cause, "reason", reason)
		}
	}
	l.notify()
}

// probeDone gives the probe token back without a verdict (cancelled, no answer
// about the link).
func (l *link) probeDone() {
	l.mu.Lock()
	if l.probing {
		l.probing = false
		l.broadcastLocked()
	}
	l.mu.Unlock()
}

// probeSoon makes the next probe due now, unless one began less than spacing ago.
func (l *link) probeSoon(spacing time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.st.State == LinkUp || now.Sub(l.lastProbe) < spacing || !l.st.NextProbe.After(now) {
		return
	}
	l.st.NextProbe = now
	l.broadcastLocked()
}

func (l *link) cause() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.Cause
}

// serverError records a 5xx with code for who (an item id, or "OPTIONS") and
// reports whether it is the link's: the same code hit something else too since
// the last verified upload.
func (l *link) serverError(code int, who string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.serverErrs[code]
	if m == nil {
		m = map[string]bool{}
		l.serverErrs[code] = m
	}
	if len(m) < 64 {
		m[who] = true
	}
	return len(m) >= 2
}

// verified forgets the server errors: a file got through.
func (l *link) verified() {
	l.mu.Lock()
	clear(l.serverErrs)
	l.mu.Unlock()
}

// hold blocks while the link is not up. It returns probe=true when the caller got
// the probe token: it must probe and then report (up, fail or probeDone). A value
// on poke makes the probe due at once (see probeSoon).
func (l *link) hold(ctx context.Context, poke <-chan struct{}, spacing time.Duration) (probe bool, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		l.mu.Lock()
		if l.st.State == LinkUp {
			l.mu.Unlock()
			return false, nil
		}
		ch := l.changed
		now := time.Now()
		wait := l.st.NextProbe.Sub(now)
		if !l.probing && wait <= 0 {
			l.probing = true
			l.lastProbe = now
			l.mu.Unlock()
			return true, nil
		}
		probing := l.probing
		l.mu.Unlock()
		var timer *time.Timer
		var due <-chan time.Time
		if !probing {
			timer = time.NewTimer(wait)
			due = timer.C
		}
		select {
		case <-ctx.Done():
		case <-ch:
		case <-due:
		case <-poke:
			l.probeSoon(spacing)
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
}

// probeBackoff is the wait between probes of a link that is not up: from
// min(retry.initial, 1s), doubling, to min(retry.max, 30s), with jitter in its
// upper half. It is shorter than a file's backoff: a probe is one OPTIONS and one
// HEAD, and a link that is back should be noticed soon.
func (u *Uploader) probeBackoff(n int) time.Duration {
	base := min(u.opts.Retry.Initial, time.Second)
	ceiling := min(u.opts.Retry.Max, 30*time.Second)
	d := base
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	if d <= 0 {
		return 0
	}
	return d/2 + mathrand.N(d/2+1)
}
