package ingest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tus/tusd/v2/pkg/handler"
)

// ErrInvalidOptions marks errors of New that are the configuration's fault
// (bad store URL, unreadable tokens or CA file) rather than the
// environment's (an unreachable bucket).
var ErrInvalidOptions = errors.New("invalid options")

// StatusChecksumMismatch is the tus checksum extension's status for a chunk
// or file whose checksum does not match.
const StatusChecksumMismatch = 460

// Defaults for Options.
const (
	DefaultBasePath    = "/files/"
	DefaultExpireAfter = 7 * 24 * time.Hour
	// DefaultMaxSize is the largest upload by default (announced as
	// Tus-Max-Size), so no client can declare 2^63-1 bytes.
	DefaultMaxSize = 16 << 30
)

// Options configures a Server. The zero value is a file store under
// ./var/objects at /files/ without authentication (dev mode).
type Options struct {
	// Store is "file:///DIR" (or "file://./relative") or
	// "s3://BUCKET?endpoint=URL&region=R".
	Store string
	// BasePath is where tus is served, "/files/" by default.
	BasePath string
	// MaxSize is the largest upload accepted (413 naming it above it;
	// announced as Tus-Max-Size). 0 = DefaultMaxSize, negative = no limit.
	MaxSize int64
	// MaxChunkSize caps one checksummed chunk: a PATCH (or
	// creation-with-upload) body with Upload-Checksum, which is held until
	// checked; a larger one gets 413 ERR_CHUNK_TOO_LARGE naming the cap.
	// Bodies without Upload-Checksum stream into the store, bounded only by
	// the upload's length. Default DefaultMaxChunkSize.
	MaxChunkSize int64
	// ChunkMemory is how much of one checksummed chunk is held in memory;
	// beyond it the chunk spills to a temporary file in TempDir. Default
	// DefaultChunkMemory.
	ChunkMemory int64
	// HeldMemory and HeldDisk bound the memory and temporary disk all
	// checksummed chunks hold together while they are checked; a chunk that
	// does not fit gets 503 ERR_SERVER_BUSY with Retry-After. Defaults
	// DefaultHeldMemory, DefaultHeldDisk.
	HeldMemory int64
	HeldDisk   int64
	// Tokens is the path of the tokens file ("agent-id token" a line);
	// "" = no token auth.
	Tokens string
	// ClientCA is a PEM file; with TLS (see ConfigureTLS), client
	// certificates it signed identify agents by their CN.
	ClientCA string
	// ExpireAfter removes incomplete uploads untouched this long; default
	// DefaultExpireAfter, negative = never.
	ExpireAfter time.Duration
	// TempDir holds the part of checksummed chunks beyond ChunkMemory while
	// they are checked; default os.TempDir().
	TempDir string
	// Net bounds connections, timeouts, header size and body pace.
	Net    NetOptions
	Logger *slog.Logger
}

// Server is courier-ingest's HTTP side: tusd plus Courier's checks.
type Server struct {
	opts      Options
	log       *slog.Logger
	backend   backend
	digests   *digests
	tusd      *handler.Handler
	store     trackedStore
	registry  *prometheus.Registry
	metrics   *metrics
	tokens    tokens
	clientCAs *x509.CertPool
	// owners caches the agent metadata of uploads (it never changes).
	owners  sync.Map
	creates keyedMutex
	locks   *uploadLocks
	budget  *holdBudget
	// failureLines rate-limits audit lines of failed authentication.
	failureLines lineLimiter
	readiness    readiness

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens the store and starts the janitor; Close stops it.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.BasePath == "" {
		opts.BasePath = DefaultBasePath
	}
	if !strings.HasPrefix(opts.BasePath, "/") {
		opts.BasePath = "/" + opts.BasePath
	}
	if !strings.HasSuffix(opts.BasePath, "/") {
		opts.BasePath += "/"
	}
	if opts.MaxChunkSize <= 0 {
		opts.MaxChunkSize = DefaultMaxChunkSize
	}
	if opts.ChunkMemory <= 0 {
		opts.ChunkMemory = DefaultChunkMemory
	}
	if opts.HeldMemory <= 0 {
		opts.HeldMemory = DefaultHeldMemory
	}
	if opts.HeldDisk <= 0 {
		opts.HeldDisk = DefaultHeldDisk
	}
	if opts.ExpireAfter == 0 {
		opts.ExpireAfter = DefaultExpireAfter
	}
	switch {
	case opts.MaxSize == 0:
		opts.MaxSize = DefaultMaxSize
	case opts.MaxSize < 0:
		opts.MaxSize = 0 // tusd: no limit
	}
	if opts.MaxChunkSize > opts.HeldMemory+opts.HeldDisk {
		return nil, fmt.Errorf("%w: max chunk size %d is more than held memory %d and held disk %d together: no such chunk could ever be held",
			ErrInvalidOptions, opts.MaxChunkSize, opts.HeldMemory, opts.HeldDisk)
	}
	opts.Net.setDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, failureLines: lineLimiter{perSecond: auditFailuresPerSecond}}
	if opts.Tokens != "" {
		if err := s.ReloadTokens(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
	}
	if opts.ClientCA != "" {
		pool, err := loadCAs(opts.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		s.clientCAs = pool
	}
	b, err := openBackend(ctx, opts.Store)
	if err != nil {
		return nil, err
	}
	s.backend = b
	s.digests = &digests{b: b, m: map[string]*digestState{}}
	s.store = trackedStore{s}

	composer := handler.NewStoreComposer()
	composer.UseCore(s.store)
	composer.UseTerminater(s.store)
	s.locks = newUploadLocks()
	composer.UseLocker(s.locks)

	cors := handler.DefaultCorsConfig
	cors.AllowHeaders += ", Upload-Checksum"
	cors.ExposeHeaders += ", Courier-Sha256, Tus-Checksum-Algorithm"
	h, err := handler.NewHandler(handler.Config{
		StoreComposer:              composer,
		BasePath:                   opts.BasePath,
		MaxSize:                    opts.MaxSize,
		DisableDownload:            true,
		Cors:                       &cors,
		Logger:                     tusdLogger(opts.Logger),
		PreUploadCreateCallback:    s.preCreate,
		PreFinishResponseCallback:  s.preFinish,
		PreUploadTerminateCallback: s.preTerminate,
		// tusd's per-read deadline on streamed bodies; Handler's pace is the
		// stricter one.
		NetworkTimeout: max(opts.Net.MaxBodyPause, 0),
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: tusd handler: %w", err)
	}
	s.tusd = h
	s.registry = prometheus.NewRegistry()
	s.metrics = newMetrics(s.registry, h.Metrics)
	s.budget = &holdBudget{memMax: opts.HeldMemory, diskMax: opts.HeldDisk, gauge: s.metrics.heldBytes}
	if sm, ok := b.(interface{ registerMetrics(prometheus.Registerer) }); ok {
		sm.registerMetrics(s.registry)
	}

	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if opts.ExpireAfter > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.janitor(jctx)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.flushAudit(jctx)
	}()
	s.log.Info("ingest ready", "store", redactStore(opts.Store), "base_path", opts.BasePath,
		"tokens", opts.Tokens != "", "client_ca", opts.ClientCA != "", "max_size", opts.MaxSize,
		"max_chunk_size", opts.MaxChunkSize, "held_memory", opts.HeldMemory, "held_disk", opts.HeldDisk)
	return s, nil
}

// Close stops the janitor. It does not wait for requests in flight: the
// http.Server owning Handler does.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// Handler serves tus at BasePath, /metrics, /healthz and /readyz: all of
// the server on one port (courier dev, tests).
func (s *Server) Handler() http.Handler {
	mux := s.uploadMux()
	mux.Handle("/metrics", s.metricsHandler())
	return mux
}

// UploadHandler is Handler without /metrics, for a public port when
// MetricsHandler is served on a listener of its own.
func (s *Server) UploadHandler() http.Handler { return s.uploadMux() }

// MetricsHandler serves /metrics, /healthz and /readyz.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metricsHandler())
	s.health(mux)
	return mux
}

func (s *Server) uploadMux() *http.ServeMux {
	mux := http.NewServeMux()
	tus := s.paced(http.StripPrefix(strings.TrimSuffix(s.opts.BasePath, "/"), http.HandlerFunc(s.serveTus)))
	mux.Handle(s.opts.BasePath, tus)
	mux.Handle(strings.TrimSuffix(s.opts.BasePath, "/"), tus)
	s.health(mux)
	return mux
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})
}

// health adds /healthz (the process answers) and /readyz (the store takes
// writes: 503 naming the problem otherwise).
func (s *Server) health(mux *http.ServeMux) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", s.serveReady)
}

func (s *Server) authRequired() bool { return s.opts.Tokens != "" || s.clientCAs != nil }

// tusError answers like tusd does, so clients see one style of error.
func tusError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, code+": "+msg+"\n")
}

func (s *Server) serveTus(w http.ResponseWriter, r *http.Request) {
	id := strings.Trim(r.URL.Path, "/")
	method := r.Method
	if o := r.Header.Get("X-HTTP-Method-Override"); method == http.MethodPost && o != "" {
		method = o
	}
	if method == http.MethodOptions {
		w.Header().Set("Tus-Checksum-Algorithm", checksumAlgorithms)
		s.tusd.ServeHTTP(extensionWriter{w}, r)
		return
	}
	if strings.ContainsAny(id, "/\\") {
		tusError(w, http.StatusNotFound, "ERR_UPLOAD_NOT_FOUND", "no such upload")
		return
	}
	who := ""
	if s.authRequired() {
		var err error
		who, err = s.identity(r)
		if err != nil {
			s.authFailure(r.Context(), "", r.RemoteAddr, id, method+": "+err.Error())
			w.Header().Set("WWW-Authenticate", `Bearer realm="courier-ingest"`)
			tusError(w, http.StatusUnauthorized, "ERR_UNAUTHORIZED", err.Error())
			return
		}
	}
	r = withCaller(r, who)
	switch {
	case method == http.MethodPost && id == "":
		s.servePost(w, r, who)
		return
	case id != "" && (method == http.MethodPatch || method == http.MethodHead || method == http.MethodDelete):
		ok, missing := s.owns(w, r, id, who)
		if !ok {
			return
		}
		if missing {
			// Neither held nor looked at further: tusd answers 404.
			s.tusd.ServeHTTP(w, asMissing(r))
			return
		}
	}
	switch method {
	case http.MethodPatch:
		var held *heldChunk
		var ok bool
		if r, held, ok = s.holdBody(w, r, id, false); !ok {
			return
		}
		if held != nil {
			defer held.Close()
		}
	case http.MethodHead:
		s.addVerified(r.Context(), w, id)
	}
	s.tusd.ServeHTTP(w, r)
}

// extensionWriter adds checksum to the Tus-Extension tusd announces.
type extensionWriter struct{ http.ResponseWriter }

func (e extensionWriter) WriteHeader(code int) {
	h := e.Header()
	if v := h.Get("Tus-Extension"); v != "" && !strings.Contains(v, "checksum") {
		h.Set("Tus-Extension", v+",checksum")
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e extensionWriter) Write(p []byte) (int, error) { return e.ResponseWriter.Write(p) }

func (e extensionWriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// redactStore drops query secrets from a store URL for logging.
func redactStore(store string) string {
	if i := strings.IndexByte(store, '?'); i >= 0 && strings.Contains(strings.ToLower(store[i:]), "secret") {
		return store[:i] + "?…"
	}
	return store
}
