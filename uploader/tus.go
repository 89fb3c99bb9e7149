package uploader

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

const tusVersion = "1.0.0"

// failKind says what a failed attempt means for the item and the link.
type failKind int

const (
	failLink      failKind = iota // no connection, timeout: waiting, not counted, link offline
	failPaused                    // 401/403, unusable server: waiting, not counted, link paused
	failLater                     // 409/423/429 and the like: waiting, not counted
	failCounted                   // the server answered about this file (5xx, 460, unverified): counted
	failFile                      // 413 or another 4xx about the file: quarantine
	failLeaseLost                 // someone else holds the item now: record nothing
)

// failure is an attempt's error together with what it means.
type failure struct {
	kind       failKind
	cause      string // Cause* for failLink and failPaused ("" = the kind's usual one)
	code       int    // HTTP status of the answer, 0 if none
	err        error
	retryAfter time.Duration // from Retry-After, if the server sent one
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func fail(kind failKind, format string, args ...any) *failure {
	return &failure{kind: kind, err: fmt.Errorf(format, args...)}
}

func failc(kind failKind, cause, format string, args ...any) *failure {
	return &failure{kind: kind, cause: cause, err: fmt.Errorf(format, args...)}
}

// StatusError is an unexpected HTTP answer.
type StatusError struct {
	Method string
	URL    string
	Code   int
	Body   string // first bytes of the answer, printable only
}

func (e *StatusError) Error() string {
	text := http.StatusText(e.Code)
	if e.Code == 460 {
		text = "Checksum Mismatch"
	}
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Code, text)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// errStalled is the cause when a request made no progress for RequestTimeout.
var errStalled = errors.New("no progress")

// reply is a drained HTTP response.
type reply struct {
	method string
	url    string
	code   int
	header http.Header
	body   string
}

// classify turns an answer nobody expected into a failure.
func (r reply) classify() *failure {
	f := r.classifyKind()
	f.code = r.code
	return f
}

func (r reply) classifyKind() *failure {
	se := &StatusError{Method: r.method, URL: r.url, Code: r.code, Body: r.body}
	switch {
	case r.code == http.StatusUnauthorized || r.code == http.StatusForbidden:
		return &failure{kind: failPaused, cause: CauseAuth, err: fmt.Errorf("%w: %w", ErrUnauthorized, se)}
	case r.code >= 300 && r.code < 400:
		// Redirects are never followed: the token and the bytes would go elsewhere.
		return &failure{kind: failPaused, cause: CauseConfig, err: fmt.Errorf("redirected to %s, %w; set upload.endpoint to the server's real address: %w",
			redact(r.header.Get("Location")), ErrOutsideEndpoint, se)}
	case r.code == 460:
		return &failure{kind: failCounted, err: fmt.Errorf("%w: %w", ErrChecksumMismatch, se)}
	case r.code == http.StatusConflict || r.code == http.StatusLocked || r.code == http.StatusTooManyRequests ||
		r.code == http.StatusRequestTimeout:
		return &failure{kind: failLater, err: se, retryAfter: retryAfter(r.header)}
	case r.code == http.StatusPreconditionFailed:
		// Tus-Resumable refused: the server speaks another protocol version.
		return &failure{kind: failPaused, cause: CauseConfig, err: se}
	case r.code == http.StatusBadRequest && interrupted(r.body):
		return &failure{kind: failLater, err: se}
	case r.code == http.StatusServiceUnavailable && (strings.Contains(r.body, "ERR_STORE_FULL") || strings.Contains(r.body, "ERR_STORE_UNAVAILABLE")):
		// The server's storage is full or failing: its fault, never the file's.
		return &failure{kind: failLink, cause: CauseServer, err: fmt.Errorf("%w: %w", ErrServer, se), retryAfter: retryAfter(r.header)}
	case r.code == http.StatusServiceUnavailable && strings.Contains(r.body, "ERR_SERVER_BUSY"):
		// The server holds as many chunks as it may: load, not the file; come back later.
		return &failure{kind: failLater, err: fmt.Errorf("%w: %w", ErrServer, se), retryAfter: retryAfter(r.header)}
	case r.code >= 500:
		return &failure{kind: failCounted, err: fmt.Errorf("%w: %w", ErrServer, se), retryAfter: retryAfter(r.header)}
	case r.code == http.StatusRequestEntityTooLarge && strings.Contains(r.body, "ERR_CHUNK_TOO_LARGE"):
		// upload.chunk_size is larger than the server takes in one request: every file
		// would fail the same way, so it is the link's configuration, not this file.
		return &failure{kind: failPaused, cause: CauseConfig, err: fmt.Errorf("upload.chunk_size too large for the server: %w", se)}
	case r.code >= 400:
		return &failure{kind: failFile, err: fmt.Errorf("%w: %w", ErrRejected, se)}
	default:
		return &failure{kind: failCounted, err: fmt.Errorf("unexpected answer: %w", se)}
	}
}

// interrupted recognises tusd's 400 answers that say nothing about the file: the
// request was cut short (our own retry took the upload's lock, the body ended early,
// the server stopped it).
func interrupted(body string) bool {
	for _, code := range []string{"ERR_UPLOAD_INTERRUPTED", "ERR_UNEXPECTED_EOF", "ERR_UPLOAD_STOPPED", "ERR_READ_CHUNK"} {
		if strings.Contains(body, code) {
			return true
		}
	}
	return false
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// send makes one request and drains its answer. body (with length bytes) may be
// nil. The request is aborted when nothing moves for RequestTimeout: the body
// reader resets the watchdog on every read, so a slow but moving upload lives on.
// A network failure comes back as a failLink failure; cancellation of ctx as ctx's error.
func (u *Uploader) send(ctx context.Context, method, target string, hdr http.Header, body io.Reader, length int64) (reply, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timeout := u.opts.RequestTimeout
	watchdog := time.AfterFunc(timeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	if body != nil {
		body = &watchedReader{r: body, onRead: func(int) { watchdog.Reset(timeout) }}
	}
	req, err := http.NewRequestWithContext(rctx, method, target, body)
	if err != nil {
		return reply{}, fail(failFile, "%s %s: %w", method, redact(target), err)
	}
	if body != nil {
		req.ContentLength = length
		if length == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Tus-Resumable", tusVersion)
	req.Header.Set("User-Agent", "courier-uploader")
	if u.opts.Token != nil {
		if tok := u.opts.Token(); tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	resp, err := u.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return reply{}, context.Cause(ctx)
		}
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // it repeats method and URL
		}
		if errors.Is(context.Cause(rctx), errStalled) {
			err = fmt.Errorf("no progress for %s", timeout)
		}
		if reason, ok := tlsReason(err, u.endpoint.Hostname()); ok {
			return reply{}, &failure{kind: failLink, cause: CauseTLS, err: fmt.Errorf("%s (%s %s: %w)", reason, method, redact(target), err)}
		}
		return reply{}, &failure{kind: failLink, cause: CauseNetwork, err: fmt.Errorf("%s %s: %w", method, redact(target), err)}
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return reply{method: method, url: redact(target), code: resp.StatusCode, header: resp.Header, body: printable(head)}, nil
}

// redact drops credentials from a URL before it goes into a message or a log:
// not only the password (url.Redacted keeps the user part, which may be a token).
func redact(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		if strings.Contains(target, "@") {
			return "(unreadable URL)"
		}
		return target
	}
	u.User = nil
	return u.String()
}

// tlsReason says in the operator's words why a TLS connection failed, naming the
// setting to look at; ok is false for other errors.
func tlsReason(err error, host string) (reason string, ok bool) {
	var (
		unknown   x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		alert     tls.AlertError
		untrusted x509.UnhandledCriticalExtension
	)
	switch {
	case errors.As(err, &unknown):
		return "tls: the server's certificate is not signed by a trusted CA (upload.tls.ca_file)", true
	case errors.As(err, &hostname):
		return fmt.Sprintf("tls: the server's certificate is not valid for %s (upload.endpoint, or the certificate's names)", host), true
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return "tls: the server's certificate has expired or is not valid yet (check the server's certificate and this machine's clock)", true
		}
		return fmt.Sprintf("tls: the server's certificate is not valid: %v", invalid), true
	case errors.As(err, &untrusted), errors.As(err, &verify):
		return fmt.Sprintf("tls: the server's certificate could not be verified: %v (upload.tls.ca_file)", err), true
	case errors.As(err, &record):
		return "tls: the server does not speak TLS (upload.endpoint: https:// to a plain HTTP port?)", true
	case errors.As(err, &alert):
		return fmt.Sprintf("tls: the server refused the handshake (%v): check upload.tls.client_cert and upload.tls.client_key", alert), true
	}
	return "", false
}

// printable keeps an error body readable in a log line or a LastError column.
func printable(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, string(b))
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// capabilities is what OPTIONS told us about the server.
type capabilities struct {
	creationWithUpload bool
	algo               string // "sha256", "sha1", or "" without the checksum extension
}

// capabilities returns the server's abilities, asking with OPTIONS once and again
// after a failure made us forget them.
func (u *Uploader) capabilities(ctx context.Context) (capabilities, error) {
	u.capsMu.Lock()
	defer u.capsMu.Unlock()
	if u.caps != nil {
		return *u.caps, nil
	}
	r, err := u.send(ctx, http.MethodOptions, u.endpoint.String(), nil, nil, 0)
	if err != nil {
		return capabilities{}, err
	}
	if r.code != http.StatusOK && r.code != http.StatusNoContent {
		f := r.classify()
		switch {
		case r.code >= 500:
			// Nothing about a file yet: the server (or a proxy) fails. Down, and probed.
			f.kind, f.cause = failLink, CauseServer
		case f.kind == failFile || f.kind == failCounted || f.kind == failLater:
			// A wrong endpoint: a person must fix upload.endpoint.
			f.kind, f.cause = failPaused, CauseConfig
		}
		return capabilities{}, f
	}
	if !headerHas(r.header.Get("Tus-Version"), tusVersion) {
		return capabilities{}, failc(failPaused, CauseConfig, "server at %s does not speak tus %s (Tus-Version %q)",
			redact(u.endpoint.String()), tusVersion, r.header.Get("Tus-Version"))
	}
	ext := r.header.Get("Tus-Extension")
	if !headerHas(ext, "creation") {
		return capabilities{}, failc(failPaused, CauseConfig, "server at %s does not support the tus creation extension", redact(u.endpoint.String()))
	}
	c := capabilities{creationWithUpload: headerHas(ext, "creation-with-upload")}
	if headerHas(ext, "checksum") {
		algos := r.header.Get("Tus-Checksum-Algorithm")
		switch {
		case headerHas(algos, "sha256"):
			c.algo = "sha256"
		case headerHas(algos, "sha1"):
			c.algo = "sha1"
		}
	}
	if c.algo == "" {
		u.log.Warn("server cannot check chunk checksums", "endpoint", redact(u.endpoint.String()))
	}
	u.caps = &c
	return c, nil
}

// forgetCapabilities makes the next upload ask OPTIONS again.
func (u *Uploader) forgetCapabilities() {
	u.capsMu.Lock()
	u.caps = nil
	u.capsMu.Unlock()
}

// headerHas reports whether a comma-separated header value lists token.
func headerHas(list, token string) bool {
	for v := range strings.SplitSeq(list, ",") {
		if strings.EqualFold(strings.TrimSpace(v), token) {
			return true
		}
	}
	return false
}

// resolve makes a Location header absolute against the endpoint.
func (u *Uploader) resolve(loc string) (string, error) {
	ref, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	return u.endpoint.ResolveReference(ref).String(), nil
}

// watchedReader calls onRead after every read with what was read.
type watchedReader struct {
	r      io.Reader
	onRead func(n int)
}

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.onRead(n)
	return n, err
}
