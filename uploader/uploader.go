package uploader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/edgecourier/courier/spool"
)

// Store is the part of the spool the uploader needs. *spool.Spool satisfies it.
type Store interface {
	Lease(ctx context.Context, owner string, ttl time.Duration) (*spool.Item, error)
	Renew(ctx context.Context, id, owner string, ttl time.Duration) error
	Release(ctx context.Context, id, owner string) error
	Ready() <-chan struct{}
	NextDue(ctx context.Context) (time.Time, error)
	OpenContent(id string) (*os.File, error)
	SetUploadURL(ctx context.Context, id, owner, url string) error
	MarkVerified(ctx context.Context, id, owner, location string) error
	MarkWaiting(ctx context.Context, id, owner string, next time.Time, reason string, counted bool) error
	Quarantine(ctx context.Context, id, owner, reason string) error
}

var _ Store = (*spool.Spool)(nil)

// Sentinel errors callers (and Upload's returned errors) branch on.
var (
	// ErrChecksumMismatch: the server answered 460 (a chunk or the whole file did not match).
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrUnauthorized: the server answered 401 or 403; the link is paused.
	ErrUnauthorized = errors.New("not authorized by the server")
	// ErrNoChecksumSupport: require_verification is on and the server lacks the checksum extension.
	ErrNoChecksumSupport = errors.New("does not support the checksum extension")
	// ErrNotVerified: the upload is complete but the server did not confirm the SHA-256.
	ErrNotVerified = errors.New("server did not confirm the file's SHA-256")
	// ErrRejected: the server refused the file (413 or another 4xx about it); the item is quarantined.
	ErrRejected = errors.New("server rejected the file")
	// ErrServer: the server failed (5xx).
	ErrServer = errors.New("server error")
)

// Retry is the backoff policy (config upload.retry).
type Retry struct {
	Initial     time.Duration // default 1s
	Max         time.Duration // default 5m
	MaxAttempts int           // counted failures before quarantine; default 30
}

// Progress is reported at most about twice a second per upload, and once with Done.
type Progress struct {
	ItemID string
	Sent   int64 // bytes the server holds or that were handed to the connection
	Total  int64
	Done   bool // verified
}

// Options configure an Uploader. Zero values take the defaults noted.
type Options struct {
	Endpoint            string // tus creation URL, e.g. https://ingest.example.org/files/
	ChunkSize           int64  // default 8 MiB
	Concurrency         int    // workers in Run; default 4
	BandwidthLimit      int64  // bytes/s over all uploads; 0 = unlimited
	RequireVerification bool   // refuse servers without the checksum extension
	Retry               Retry
	AgentID             string // sent as the "agent" metadata value
	SendFilenames       bool   // privacy.send_filenames
	Client              *http.Client
	Token               func() string // bearer token, asked before each request; nil or "" = none
	Logger              *slog.Logger  // the caller names the component
	Progress            func(p Progress)
	// LeaseTTL is how long a lease lasts between renewals; default 2m.
	LeaseTTL time.Duration
	// RequestTimeout aborts a request after this long without progress (no body bytes
	// sent, no response); default 1m.
	RequestTimeout time.Duration
}

// Link states reported by Link.
const (
	LinkOK      = "ok"
	LinkPaused  = "paused"  // the server refuses us (401/403, no checksum support): needs a person
	LinkOffline = "offline" // no connection, timeouts: retried for as long as it takes
)

// LinkStatus is the state of the connection to the server, for `courier status`.
type LinkStatus struct {
	State     string    `json:"state"`                // LinkOK, LinkPaused or LinkOffline
	LastError string    `json:"last_error,omitempty"` // the last link failure (kept after recovery)
	Since     time.Time `json:"since"`                // when State was entered
}

// Uploader uploads spooled items. Safe for concurrent use.
type Uploader struct {
	store    Store
	opts     Options
	endpoint *url.URL
	client   *http.Client
	log      *slog.Logger
	limiter  *rate.Limiter // nil = unlimited
	owner    string        // prefix of the lease owners of Run's workers
	wake     chan struct{} // hands a Ready signal on to another idle worker

	capsMu sync.Mutex
	caps   *capabilities // nil = discover before the next request

	link link
}

// DefaultChunkSize is the PATCH size when Options.ChunkSize is 0.
const DefaultChunkSize = 8 << 20

// inlineLimit caps creation-with-upload: larger files go through PATCH.
const inlineLimit = 1 << 20

// New checks opts and returns an Uploader for store.
func New(store Store, opts Options) (*Uploader, error) {
	if store == nil {
		return nil, errors.New("uploader: store is nil")
	}
	ep, err := url.Parse(opts.Endpoint)
	if err != nil || (ep.Scheme != "http" && ep.Scheme != "https") || ep.Host == "" {
		return nil, fmt.Errorf("uploader: endpoint %q: must be an http or https URL", opts.Endpoint)
	}
	if opts.ChunkSize < 0 || opts.Concurrency < 0 || opts.BandwidthLimit < 0 || opts.Retry.MaxAttempts < 0 ||
		opts.Retry.Initial < 0 || opts.Retry.Max < 0 || opts.LeaseTTL < 0 || opts.RequestTimeout < 0 {
		return nil, errors.New("uploader: negative sizes, counts or durations are not allowed")
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 4
	}
	if opts.Retry.Initial == 0 {
		opts.Retry.Initial = time.Second
	}
	if opts.Retry.Max == 0 {
		opts.Retry.Max = 5 * time.Minute
	}
	if opts.Retry.Max < opts.Retry.Initial {
		opts.Retry.Max = opts.Retry.Initial
	}
	if opts.Retry.MaxAttempts == 0 {
		opts.Retry.MaxAttempts = 30
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 2 * time.Minute
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = time.Minute
	}
	u := &Uploader{
		store:    store,
		opts:     opts,
		endpoint: ep,
		client:   opts.Client,
		log:      opts.Logger,
		wake:     make(chan struct{}, 1),
	}
	if u.client == nil {
		u.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	if opts.BandwidthLimit > 0 {
		u.limiter = rate.NewLimiter(rate.Limit(opts.BandwidthLimit), limiterBurst(opts.BandwidthLimit))
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	u.owner = "uploader-" + hex.EncodeToString(b[:])
	u.link.state, u.link.since = LinkOK, time.Now()
	return u, nil
}

// Link reports the state of the connection to the server.
func (u *Uploader) Link() LinkStatus { return u.link.status() }

// Run uploads with Options.Concurrency workers until ctx is cancelled. Workers
// lease items, wake on the store's Ready signal or when the next waiting item is
// due, and hold back while the link is paused or offline. On cancellation every
// lease is released; Run returns nil once all workers have stopped.
func (u *Uploader) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for i := range u.opts.Concurrency {
		owner := fmt.Sprintf("%s-%d", u.owner, i)
		g.Go(func() error { return u.worker(gctx, owner) })
	}
	err := g.Wait()
	u.client.CloseIdleConnections()
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func (u *Uploader) worker(ctx context.Context, owner string) error {
	idle := 0 // consecutive store failures, for backoff
	for {
		if err := u.link.wait(ctx); err != nil {
			return nil
		}
		item, err := u.store.Lease(ctx, owner, u.opts.LeaseTTL)
		switch {
		case ctx.Err() != nil:
			if err == nil {
				u.release(item.ID, owner)
			}
			return nil
		case errors.Is(err, spool.ErrEmpty):
			idle = 0
			if err := u.sleepUntilWork(ctx); err != nil {
				return nil
			}
			continue
		case err != nil:
			idle++
			u.log.Error("lease failed", "owner", owner, "err", err)
			if sleep(ctx, u.backoff(idle)) != nil {
				return nil
			}
			continue
		}
		idle = 0
		// Another item may be leasable too: let one more idle worker look.
		select {
		case u.wake <- struct{}{}:
		default:
		}
		if err := u.Upload(ctx, item, owner); err != nil && ctx.Err() == nil {
			u.log.Debug("upload did not finish", "item", item.ID, "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// sleepUntilWork waits for the store's Ready signal, another worker's hint, the
// next due waiting item, or a periodic look: leases of a crashed process expire
// without any signal, and `courier spool retry` runs in another process, whose
// Ready signal does not reach us. A person who ran it should not wait long.
func (u *Uploader) sleepUntilWork(ctx context.Context) error {
	wait := 5 * time.Second
	due, err := u.store.NextDue(ctx)
	if err != nil {
		u.log.Warn("next due time unknown", "err", err)
	} else if !due.IsZero() {
		wait = min(wait, max(time.Until(due), 10*time.Millisecond))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-u.store.Ready():
	case <-u.wake:
	case <-t.C:
	}
	return nil
}

// release hands a lease back after cancellation, with its own short deadline.
func (u *Uploader) release(id, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := u.store.Release(ctx, id, owner); err != nil && !errors.Is(err, spool.ErrLeaseLost) {
		u.log.Warn("release lease", "item", id, "err", err)
	}
}

// link is the shared view of the connection: a failure of the whole link makes
// every worker hold back until the backoff has passed.
type link struct {
	mu       sync.Mutex
	state    string
	lastErr  string
	since    time.Time
	failures int       // consecutive link failures
	until    time.Time // workers wait until then
}

func (l *link) status() LinkStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LinkStatus{State: l.state, LastError: l.lastErr, Since: l.since}
}

func (l *link) ok() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != LinkOK {
		l.state, l.since = LinkOK, time.Now()
	}
	l.failures, l.until = 0, time.Time{}
}

// fail records a link failure and returns when to try again.
func (l *link) fail(state, reason string, backoff func(n int) time.Duration) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != state {
		l.state, l.since = state, time.Now()
	}
	l.lastErr = reason
	l.failures++
	next := time.Now().Add(backoff(l.failures))
	if next.After(l.until) {
		l.until = next
	}
	return l.until
}

func (l *link) wait(ctx context.Context) error {
	l.mu.Lock()
	until := l.until
	l.mu.Unlock()
	return sleep(ctx, time.Until(until))
}

// backoff is exponential with full jitter: uniform in [0, min(Max, Initial*2^(n-1))].
func (u *Uploader) backoff(n int) time.Duration {
	ceiling := u.opts.Retry.Initial
	for i := 1; i < n && ceiling < u.opts.Retry.Max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, u.opts.Retry.Max)
	return randDuration(ceiling)
}

func randDuration(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return mathrand.N(ceiling + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
