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
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/edgecourier/courier/spool"
)

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
	// ErrOutsideEndpoint: the server pointed outside upload.endpoint (a Location on
	// another host, scheme, port or path, or a redirect); it is not followed.
	ErrOutsideEndpoint = errors.New("outside the configured endpoint")
)

// Retry is the backoff policy (config upload.retry).
type Retry struct {
	Initial     time.Duration // default 1s
	Max         time.Duration // default 5m
	MaxAttempts int           // counted failures before quarantine; default 30
}

// Options configure an Uploader. Zero values take the defaults noted.
type Options struct {
	Endpoint            string // tus creation URL, e.g. https://ingest.example.org/files/
	ChunkSize           int64  // default 8 MiB
	Concurrency         int    // uploads of more than one request at once (large files); default 4
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
	// Workers is how many items Run has in flight at once; default 4×Concurrency,
	// at least 16 and at most 64 (and never below Concurrency). Only Concurrency of them send a file in more than one request; the others
	// carry small files, whose cost is round trips and spool commits, not bandwidth.
	Workers int
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
	wake     chan struct{} // lets one idle worker look for work (and hand on to the next)
	poke     chan struct{} // the spool changed from outside: probe a link that is not up now
	large    chan struct{} // a slot per multi-request upload (Options.Concurrency)

	capsMu sync.Mutex
	caps   *capabilities // nil = discover before the next request

	link *link

	chunk     atomic.Int64 // PATCH size now: halved after an interrupted chunk, grown back after successes
	chunkGood atomic.Int64 // chunks in a row that got through at the current size

	activeMu    sync.Mutex
	active      map[string]*tracker
	progressLog time.Duration // a long upload is logged this often
}

// DefaultChunkSize is the PATCH size when Options.ChunkSize is 0.
const DefaultChunkSize = 8 << 20

// MinChunkSize is the smallest PATCH an unstable link brings the chunk size down to
// (or Options.ChunkSize if that is smaller).
const MinChunkSize = 256 << 10

// chunkGrowAfter is how many chunks in a row must get through before the chunk
// size doubles again.
const chunkGrowAfter = 4

// inlineLimit caps creation-with-upload: larger files go through PATCH.
const inlineLimit = 1 << 20

// wakePoll is how often Run asks a Waker store whether the spool changed.
const wakePoll = 250 * time.Millisecond

// New checks opts and returns an Uploader for store.
func New(store Store, opts Options) (*Uploader, error) {
	if store == nil {
		return nil, errors.New("uploader: store is nil")
	}
	ep, err := url.Parse(opts.Endpoint)
	if err != nil || (ep.Scheme != "http" && ep.Scheme != "https") || ep.Host == "" || ep.Opaque != "" {
		return nil, fmt.Errorf("uploader: endpoint %q: must be an http or https URL", redact(opts.Endpoint))
	}
	if ep.User != nil {
		return nil, fmt.Errorf("uploader: endpoint %q: credentials in the URL are not allowed; put the token in upload.bearer_token_file", redact(opts.Endpoint))
	}
	if opts.ChunkSize < 0 || opts.Concurrency < 0 || opts.Workers < 0 || opts.BandwidthLimit < 0 || opts.Retry.MaxAttempts < 0 ||
		opts.Retry.Initial < 0 || opts.Retry.Max < 0 || opts.LeaseTTL < 0 || opts.RequestTimeout < 0 {
		return nil, errors.New("uploader: negative sizes, counts or durations are not allowed")
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 4
	}
	if opts.Workers == 0 {
		// Below courier-ingest's default cap of 64 connections per address.
		opts.Workers = min(max(4*opts.Concurrency, 16), 64)
	}
	opts.Workers = max(opts.Workers, opts.Concurrency)
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
		log:      opts.Logger,
		wake:     make(chan struct{}, 1),
		poke:     make(chan struct{}, 1),
		large:    make(chan struct{}, opts.Concurrency),
		active:   map[string]*tracker{},

		progressLog: progressLogEach,
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	u.client = uploadClient(opts.Client, opts.Workers)
	if opts.BandwidthLimit > 0 {
		u.limiter = rate.NewLimiter(rate.Limit(opts.BandwidthLimit), limiterBurst(opts.BandwidthLimit))
	}
	u.chunk.Store(opts.ChunkSize)
	var b [4]byte
	_, _ = rand.Read(b[:])
	u.owner = "uploader-" + hex.EncodeToString(b[:])
	u.link = newLink(u.log)
	return u, nil
}

// uploadClient is the one client all uploads share: it never follows redirects
// (a redirect is refused like a Location outside the endpoint, so the token and
// the bytes go nowhere else), and its transport keeps an idle connection for
// every worker, so small files do not pay for a new connection (and TLS
// handshake) each.
func uploadClient(base *http.Client, workers int) *http.Client {
	var c http.Client
	if base != nil {
		c = *base
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	tr, ok := c.Transport.(*http.Transport)
	if c.Transport == nil {
		tr, ok = http.DefaultTransport.(*http.Transport), true
	}
	if ok && (tr.MaxIdleConnsPerHost < workers || (tr.MaxIdleConns != 0 && tr.MaxIdleConns < workers) || c.Transport == nil) {
		tr = tr.Clone()
		tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, workers)
		if tr.MaxIdleConns != 0 {
			tr.MaxIdleConns = max(tr.MaxIdleConns, workers)
		}
		c.Transport = tr
	}
	return &c
}

// Notify tells the uploader that an item may have become leasable (intake, retry
// in this process): an idle worker leases it at once. It never blocks.
func (u *Uploader) Notify() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Run uploads with Options.Workers workers until ctx is cancelled. Workers lease
// items, wake on the store's Ready signal, Notify, a change seen through Waker or
// when the next waiting item is due, and hold back while the link is down or
// paused, when one of them probes it now and then. On cancellation every lease is
// released; Run returns nil once all workers have stopped.
func (u *Uploader) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for i := range u.opts.Workers {
		owner := fmt.Sprintf("%s-%d", u.owner, i)
		g.Go(func() error { return u.worker(gctx, owner) })
	}
	if w, ok := u.store.(Waker); ok {
		g.Go(func() error { u.watchSpool(gctx, w); return nil })
	}
	err := g.Wait()
	u.client.CloseIdleConnections()
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// watchSpool polls the spool's change counter: `courier spool retry` in another
// process makes an item due without this process's Ready signal.
func (u *Uploader) watchSpool(ctx context.Context, w Waker) {
	last, err := w.WakeCounter(ctx)
	failed := err != nil
	t := time.NewTicker(wakePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := w.WakeCounter(ctx)
		if err != nil {
			if !failed && ctx.Err() == nil {
				u.log.Warn("spool change counter unavailable", "err", err)
			}
			failed = true
			continue
		}
		failed = false
		if n != last {
			last = n
			u.Notify()
			select {
			case u.poke <- struct{}{}:
			default:
			}
		}
	}
}

func (u *Uploader) worker(ctx context.Context, owner string) error {
	idle := 0 // consecutive store failures, for backoff
	for {
		probe, err := u.link.hold(ctx, u.poke, min(u.opts.Retry.Initial, time.Second))
		if err != nil {
			return nil
		}
		if probe && !u.probe(ctx) {
			continue
		}
		item, err := u.store.Lease(ctx, owner, u.opts.LeaseTTL)
		switch {
		case ctx.Err() != nil:
			if err == nil {
				u.release(item.ID, owner)
			}
			u.endProbe(probe)
			return nil
		case errors.Is(err, spool.ErrEmpty):
			idle = 0
			if probe {
				// Nothing to try the link with; OPTIONS and HEAD went through.
				u.link.up()
			}
			if err := u.sleepUntilWork(ctx); err != nil {
				return nil
			}
			continue
		case err != nil:
			u.endProbe(probe)
			idle++
			u.log.Error("lease failed", "owner", owner, "err", err)
			if sleep(ctx, u.backoff(idle)) != nil {
				return nil
			}
			continue
		}
		idle = 0
		// Another item may be leasable too: let one more idle worker look.
		u.Notify()
		if err := u.upload(ctx, item, owner, probe); err != nil && ctx.Err() == nil {
			u.log.Debug("upload did not finish", "item", item.ID, "err", err)
		}
		u.endProbe(probe)
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (u *Uploader) endProbe(probe bool) {
	if probe {
		u.link.probeDone()
	}
}

// sleepUntilWork waits for the store's Ready signal, Notify, the next due waiting
// item, the link changing, or a periodic look: leases of a crashed process expire
// without any signal, and without a Waker a retry in another process is only seen
// this way.
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

// chunkInterrupted halves the chunk size (down to MinChunkSize): on a link that
// drops every few seconds a large checked chunk never gets through whole.
func (u *Uploader) chunkInterrupted(log *slog.Logger) {
	u.chunkGood.Store(0)
	floor := min(int64(MinChunkSize), u.opts.ChunkSize)
	for {
		cur := u.chunk.Load()
		next := max(cur/2, floor)
		if next == cur || u.chunk.CompareAndSwap(cur, next) {
			if next != cur {
				log.Debug("chunk interrupted; smaller chunks from now on", "chunk_size", next)
			}
			return
		}
	}
}

// chunkDone grows the chunk size back after chunkGrowAfter chunks in a row got through.
func (u *Uploader) chunkDone() {
	if u.chunkGood.Add(1) < chunkGrowAfter {
		return
	}
	u.chunkGood.Store(0)
	for {
		cur := u.chunk.Load()
		next := min(cur*2, u.opts.ChunkSize)
		if next == cur || u.chunk.CompareAndSwap(cur, next) {
			return
		}
	}
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
