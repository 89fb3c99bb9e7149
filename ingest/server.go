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
	DefaultBasePath     = "/files/"
	DefaultExpireAfter  = 7 * 24 * time.Hour
	DefaultMaxChunkSize = 64 << 20
)

// Options configures a Server. The zero value is a file store under
// ./var/objects at /files/ without authentication (dev mode).
type Options struct {
	// Store is "file:///DIR" (or "file://./relative") or
	// "s3://BUCKET?endpoint=URL&region=R".
	Store string
	// BasePath is where tus is served, "/files/" by default.
	BasePath string
	// MaxSize is the largest upload accepted (413 above it); 0 = no limit.
	MaxSize int64
	// MaxChunkSize bounds one PATCH (or creation-with-upload) body; a
	// larger one is refused with 413. Default DefaultMaxChunkSize.
	MaxChunkSize int64
	// Tokens is the path of the tokens file ("agent-id token" a line);
	// "" = no token auth.
	Tokens string
	// ClientCA is a PEM file; with TLS (see ConfigureTLS), client
	// certificates it signed identify agents by their CN.
	ClientCA string
	// ExpireAfter removes incomplete uploads untouched this long; default
	// DefaultExpireAfter, negative = never.
	ExpireAfter time.Duration
	// TempDir holds chunks larger than a few MiB while their checksum is
	// checked; default os.TempDir().
	TempDir string
	Logger  *slog.Logger
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
	if opts.ExpireAfter == 0 {
		opts.ExpireAfter = DefaultExpireAfter
	}
	if opts.MaxSize < 0 {
		return nil, fmt.Errorf("%w: max size must be >= 0, got %d", ErrInvalidOptions, opts.MaxSize)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger}
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
		StoreComposer:             composer,
		BasePath:                  opts.BasePath,
		MaxSize:                   opts.MaxSize,
		DisableDownload:           true,
		Cors:                      &cors,
		Logger:                    tusdLogger(opts.Logger),
		PreUploadCreateCallback:   s.preCreate,
		PreFinishResponseCallback: s.preFinish,
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: tusd handler: %w", err)
	}
	s.tusd = h
	s.registry = prometheus.NewRegistry()
	s.metrics = newMetrics(s.registry, h.Metrics)
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
	s.log.Info("ingest ready", "store", redactStore(opts.Store), "base_path", opts.BasePath,
		"tokens", opts.Tokens != "", "client_ca", opts.ClientCA != "", "max_size", opts.MaxSize)
	return s, nil
}

// Close stops the janitor. It does not wait for requests in flight: the
// http.Server owning Handler does.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// Handler serves tus at BasePath, /metrics and /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	tus := http.StripPrefix(strings.TrimSuffix(s.opts.BasePath, "/"), http.HandlerFunc(s.serveTus))
	mux.Handle(s.opts.BasePath, tus)
	mux.Handle(strings.TrimSuffix(s.opts.BasePath, "/"), tus)
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
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
			s.metrics.authFailures.Inc()
			s.log.Info("unauthenticated request refused", "method", method, "remote", r.RemoteAddr, "err", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="courier-ingest"`)
			tusError(w, http.StatusUnauthorized, "ERR_UNAUTHORIZED", err.Error())
			return
		}
	}
	switch {
	case method == http.MethodPost && id == "":
		s.servePost(w, r, who)
		return
	case id != "" && (method == http.MethodPatch || method == http.MethodHead || method == http.MethodDelete):
		if !s.owns(w, r, id, who) {
			return
		}
	}
	switch method {
	case http.MethodPatch:
		body, ok := s.holdBody(w, r)
		if !ok {
			return
		}
		if body != nil {
			defer body.Close()
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
