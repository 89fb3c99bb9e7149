package ingest

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
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

// notFoundOr503 reports whether err means the upload does not exist. Any other
// store error is answered 503 here (the client retries): it must not be taken for
// "unknown upload", which would skip the owner check or start the upload anew.
func (s *Server) notFoundOr503(w http.ResponseWriter, id string, err error) bool {
	var he handler.Error
	if errors.Is(err, os.ErrNotExist) || (errors.As(err, &he) && he.ErrorCode == handler.ErrNotFound.ErrorCode) {
		return true
	}
	s.log.Warn("store error looking up an upload; asking the client to retry", "id", id, "err", err)
	tusError(w, http.StatusServiceUnavailable, "ERR_STORE_UNAVAILABLE", "the upload could not be looked up, try again")
	return false
}

// owns answers 403 unless who may touch upload id. Unknown ids pass: tusd
// answers 404 for them.
func (s *Server) owns(w http.ResponseWriter, r *http.Request, id, who string) bool {
	if !s.authRequired() {
		return true
	}
	owner, ok := s.owners.Load(id)
	if !ok {
		up, err := s.store.GetUpload(r.Context(), id)
		if err != nil {
			return !s.notFoundOr503(w, id, err) // unknown ids pass: tusd answers 404
		}
		info, err := up.GetInfo(r.Context())
		if err != nil {
			return !s.notFoundOr503(w, id, err)
		}
		owner = info.MetaData["agent"]
		if info.SizeIsDeferred || info.Offset < info.Size {
			// Only uploads in progress are remembered: finished ones are looked up
			// again, so the map does not grow with every file ever stored.
			s.owners.Store(id, owner)
		}
	}
	if owner != who {
		s.metrics.authFailures.Inc()
		s.log.Warn("upload of another agent refused", "id", id, "identity", who)
		tusError(w, http.StatusForbidden, "ERR_FORBIDDEN", fmt.Sprintf("upload %s does not belong to agent %q", id, who))
		return false
	}
	return true
}

// holdBody reads and checks a chunk that carries Upload-Checksum and puts
// the checked bytes back as the request body. It returns false when it
// answered the request itself.
func (s *Server) holdBody(w http.ResponseWriter, r *http.Request) (io.Closer, bool) {
	if r.ContentLength > s.opts.MaxChunkSize {
		tusError(w, http.StatusRequestEntityTooLarge, "ERR_CHUNK_TOO_LARGE",
			fmt.Sprintf("chunk of %d bytes is larger than the %d bytes this server accepts in one request", r.ContentLength, s.opts.MaxChunkSize))
		return nil, false
	}
	header := r.Header.Get("Upload-Checksum")
	if header == "" {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxChunkSize)
		}
		return nil, true
	}
	sum, err := parseUploadChecksum(header)
	if err != nil {
		tusError(w, http.StatusBadRequest, "ERR_INVALID_CHECKSUM_HEADER", err.Error())
		return nil, false
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	held, err := holdChunk(r.Body, sum, s.opts.MaxChunkSize, s.opts.TempDir)
	switch {
	case errors.Is(err, errChunkMismatch):
		s.metrics.mismatch.WithLabelValues("chunk").Inc()
		s.log.Info("chunk checksum mismatch; chunk discarded", "path", r.URL.Path, "algorithm", sum.alg, "offset", r.Header.Get("Upload-Offset"))
		tusError(w, StatusChecksumMismatch, "ERR_CHECKSUM_MISMATCH", "the chunk's "+sum.alg+" does not match Upload-Checksum; it was discarded, send it again")
		return nil, false
	case errors.Is(err, errChunkTooLarge):
		tusError(w, http.StatusRequestEntityTooLarge, "ERR_CHUNK_TOO_LARGE",
			fmt.Sprintf("chunk is larger than the %d bytes this server accepts in one request", s.opts.MaxChunkSize))
		return nil, false
	case err != nil:
		// The client went away or the temp dir failed: nothing was written.
		s.log.Warn("chunk not received", "path", r.URL.Path, "err", err)
		tusError(w, http.StatusBadRequest, "ERR_READ_CHUNK", err.Error())
		return nil, false
	}
	r.Body = io.NopCloser(held)
	r.ContentLength = held.size
	r.Header.Set("Content-Length", strconv.FormatInt(held.size, 10))
	return held, true
}

func (s *Server) servePost(w http.ResponseWriter, r *http.Request, who string) {
	meta, err := parseMetadata(r.Header.Get("Upload-Metadata"))
	if err != nil {
		tusError(w, http.StatusBadRequest, "ERR_INVALID_METADATA", err.Error())
		return
	}
	if msg := checkCourierMetadata(meta); msg != "" {
		tusError(w, http.StatusBadRequest, "ERR_INVALID_METADATA", msg)
		return
	}
	if s.authRequired() && meta["agent"] != who {
		s.metrics.authFailures.Inc()
		s.log.Warn("upload for another agent refused", "identity", who, "courier_id", meta["courier-id"])
		tusError(w, http.StatusForbidden, "ERR_FORBIDDEN",
			fmt.Sprintf("Upload-Metadata agent %q is not your identity %q", meta["agent"], who))
		return
	}
	if l := r.Header.Get("Upload-Length"); l != "" && s.opts.MaxSize > 0 {
		if n, err := strconv.ParseInt(l, 10, 64); err == nil && n > s.opts.MaxSize {
			tusError(w, http.StatusRequestEntityTooLarge, "ERR_MAX_SIZE_EXCEEDED",
				fmt.Sprintf("Upload-Length %d is larger than this server's maximum of %d bytes", n, s.opts.MaxSize))
			return
		}
	}
	if cid := meta["courier-id"]; cid != "" {
		unlock := s.creates.lock(cid)
		defer unlock()
		existing, err := s.backend.lookup(r.Context(), cid)
		if err != nil {
			s.log.Error("looking up courier-id failed", "courier_id", cid, "err", err)
			tusError(w, http.StatusInternalServerError, "ERR_INTERNAL_SERVER_ERROR", "looking up courier-id failed")
			return
		}
		if existing != "" && s.answerExisting(w, r, existing, who) {
			return
		}
	}
	if r.Header.Get("Content-Type") == "application/offset+octet-stream" {
		body, ok := s.holdBody(w, r)
		if !ok {
			return
		}
		if body != nil {
			defer body.Close()
		}
	}
	s.tusd.ServeHTTP(w, r)
}

// answerExisting answers a POST for a courier-id the server already holds
// with that upload's Location and offset. It returns false if the upload
// vanished meanwhile (then a new one is made).
func (s *Server) answerExisting(w http.ResponseWriter, r *http.Request, id, who string) bool {
	up, err := s.store.GetUpload(r.Context(), id)
	if err != nil {
		return !s.notFoundOr503(w, id, err)
	}
	info, err := up.GetInfo(r.Context())
	if err != nil {
		return !s.notFoundOr503(w, id, err)
	}
	if l := r.Header.Get("Upload-Length"); l != "" && !info.SizeIsDeferred && l != strconv.FormatInt(info.Size, 10) {
		tusError(w, http.StatusConflict, "ERR_COURIER_ID_EXISTS",
			fmt.Sprintf("courier-id already holds an upload of %d bytes, this one says %s", info.Size, l))
		return true
	}
	if s.authRequired() && info.MetaData["agent"] != who {
		s.metrics.authFailures.Inc()
		tusError(w, http.StatusForbidden, "ERR_FORBIDDEN", "courier-id belongs to an upload of another agent")
		return true
	}
	d, err := s.verifiedDigest(r.Context(), up, info)
	switch {
	case d != "":
		w.Header().Set("Courier-Sha256", d)
	case errors.Is(err, errFileMismatch):
		// It did not verify and was discarded: make a new one.
		return false
	case err != nil:
		// A passing store error must never replace a complete upload with an empty one.
		s.log.Warn("existing upload not checked; asking the client to retry", "id", id, "err", err)
		tusError(w, http.StatusServiceUnavailable, "ERR_STORE_UNAVAILABLE", "the existing upload could not be checked, try again")
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("Location", scheme+"://"+r.Host+s.opts.BasePath+id)
	w.Header().Set("Upload-Offset", strconv.FormatInt(info.Offset, 10))
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.WriteHeader(http.StatusCreated)
	s.log.Info("existing upload returned for courier-id", "id", id, "offset", info.Offset)
	return true
}

// addVerified sets Courier-Sha256 for a complete, verified upload.
func (s *Server) addVerified(ctx context.Context, w http.ResponseWriter, id string) {
	up, err := s.store.GetUpload(ctx, id)
	if err != nil {
		return
	}
	info, err := up.GetInfo(ctx)
	if err != nil {
		return
	}
	d, err := s.verifiedDigest(ctx, up, info)
	if err != nil && !errors.Is(err, errFileMismatch) {
		s.log.Warn("verifying upload on HEAD failed", "id", id, "err", err)
	}
	if d != "" {
		w.Header().Set("Courier-Sha256", d)
	}
}

func (s *Server) preCreate(hook handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	// servePost already checked the metadata strictly.
	return handler.HTTPResponse{}, handler.FileInfoChanges{ID: hook.Upload.MetaData["courier-id"]}, nil
}

func (s *Server) preFinish(hook handler.HookEvent) (handler.HTTPResponse, error) {
	ctx := hook.Context
	up, err := s.store.GetUpload(ctx, hook.Upload.ID)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	d, err := s.verify(ctx, up, hook.Upload)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	if d == "" {
		return handler.HTTPResponse{}, nil
	}
	return handler.HTTPResponse{Header: handler.HTTPHeader{"Courier-Sha256": d}}, nil
}

// parseMetadata parses Upload-Metadata strictly (tusd's parser skips what it
// does not understand), so a broken client hears what is wrong.
func parseMetadata(header string) (map[string]string, error) {
	meta := map[string]string{}
	if strings.TrimSpace(header) == "" {
		return meta, nil
	}
	for i, pair := range strings.Split(header, ",") {
		fields := strings.Fields(pair)
		if len(fields) == 0 || len(fields) > 2 {
			return nil, fmt.Errorf("Upload-Metadata pair %d: want \"key base64value\", got %q", i+1, strings.TrimSpace(pair))
		}
		key := fields[0]
		if _, dup := meta[key]; dup {
			return nil, fmt.Errorf("Upload-Metadata: key %q appears twice", key)
		}
		val := ""
		if len(fields) == 2 {
			b, err := base64.StdEncoding.DecodeString(fields[1])
			if err != nil {
				return nil, fmt.Errorf("Upload-Metadata key %q: value is not base64: %v", key, err)
			}
			val = string(b)
		}
		meta[key] = val
	}
	// tusd reads the header with its own, stricter rules (one space, no tabs): a
	// key it would read differently (a courier-id it does not see) is refused here.
	tm := handler.ParseMetadataHeader(header)
	for k, v := range meta {
		if got, ok := tm[k]; !ok || got != v {
			return nil, fmt.Errorf("Upload-Metadata key %q: separate key and value with exactly one space", k)
		}
	}
	return meta, nil
}

// checkCourierMetadata returns what is wrong with Courier's keys, or "".
func checkCourierMetadata(meta map[string]string) string {
	cid, hasID := meta["courier-id"]
	if _, isAgent := meta["agent"]; isAgent && !hasID {
		return "Upload-Metadata has agent but no courier-id: a Courier agent must name its item"
	}
	if hasID {
		u, err := uuid.Parse(cid)
		if err != nil || u.String() != cid {
			return fmt.Sprintf("Upload-Metadata courier-id %q is not a lower-case UUID", cid)
		}
	}
	if d, ok := meta["sha256"]; ok {
		if b, err := hex.DecodeString(d); err != nil || len(b) != 32 || strings.ToLower(d) != d {
			return fmt.Sprintf("Upload-Metadata sha256 must be 64 lower-case hex digits, got %q", d)
		}
	}
	return ""
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

// keyedMutex serialises creation per courier-id so two POSTs for one item
// cannot make two objects.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// redactStore drops query secrets from a store URL for logging.
func redactStore(store string) string {
	if i := strings.IndexByte(store, '?'); i >= 0 && strings.Contains(strings.ToLower(store[i:]), "secret") {
		return store[:i] + "?…"
	}
	return store
}
