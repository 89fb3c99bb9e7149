package uploader

import (
	"cmp"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgecourier/courier/spool"
)

// errGone: the server no longer knows the upload (404/410): create it again.
var errGone = errors.New("upload gone from the server")

// Upload makes one attempt at item, which owner has leased, and records the
// outcome in the store: verified, waiting (counted or not) or quarantined. The
// lease is renewed while the attempt runs. It returns nil when the item was
// verified, and otherwise the reason it was not (already recorded). When ctx is
// cancelled the lease is released and ctx's error returned.
func (u *Uploader) Upload(ctx context.Context, item *spool.Item, owner string) error {
	return u.upload(ctx, item, owner, false)
}

// upload is Upload; probe says the attempt also tests a link that is not up, so
// any answer about the file (not about the link) brings the link up.
func (u *Uploader) upload(ctx context.Context, item *spool.Item, owner string, probe bool) error {
	log := u.log.With("item", item.ID)
	uctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { u.keepLease(uctx, cancel, item.ID, owner, log) })
	loc, err := u.transfer(uctx, item, owner, log)
	cancel(nil)
	wg.Wait()

	if err != nil && errors.Is(context.Cause(uctx), spool.ErrLeaseLost) || errors.Is(err, spool.ErrLeaseLost) {
		log.Warn("lease lost during upload; leaving the item to its new owner")
		return fmt.Errorf("uploader: item %s: %w", item.ID, spool.ErrLeaseLost)
	}
	if err != nil && ctx.Err() != nil {
		u.release(item.ID, owner)
		return ctx.Err()
	}
	// The outcome is recorded even if shutdown begins right now: a verified upload
	// must not be forgotten.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer rcancel()
	if err == nil {
		if err := u.store.MarkVerified(rctx, item.ID, owner, loc); err != nil {
			return fmt.Errorf("uploader: item %s: mark verified: %w", item.ID, err)
		}
		u.link.verified()
		u.link.up()
		log.Info("verified", "sha256", item.SHA256, "size", item.Size)
		if u.opts.Progress != nil {
			u.opts.Progress(Progress{ItemID: item.ID, Sent: item.Size, Total: item.Size, ChunkSize: u.chunk.Load(), Done: true})
		}
		return nil
	}
	return u.settle(rctx, item, owner, err, probe, log)
}

// keepLease renews the lease every third of its TTL until ctx ends; a lost lease
// cancels the upload.
func (u *Uploader) keepLease(ctx context.Context, cancel context.CancelCauseFunc, id, owner string, log *slog.Logger) {
	t := time.NewTicker(u.opts.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := u.store.Renew(ctx, id, owner, u.opts.LeaseTTL)
			if errors.Is(err, spool.ErrLeaseLost) {
				cancel(err)
				return
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("renew lease", "err", err)
			}
		}
	}
}

// settle records a failed attempt. A failure of the whole link changes the link
// state (logged once there) and leaves the item due at once: workers hold back
// while the link is not up, and a link that comes back finds it ready.
func (u *Uploader) settle(ctx context.Context, item *spool.Item, owner string, err error, probe bool, log *slog.Logger) error {
	f, ok := errors.AsType[*failure](err)
	if !ok {
		f = &failure{kind: failLater, err: err}
	}
	// The same 5xx for different files (or for OPTIONS) is the server or a proxy in
	// front of it: an hour of a broken proxy must not quarantine the backlog.
	if f.kind == failCounted && f.code >= 500 && u.link.serverError(f.code, item.ID) {
		f = &failure{kind: failLink, cause: CauseServer, retryAfter: f.retryAfter,
			err: fmt.Errorf("%w (the same answer for several files: the server or a proxy in front of it)", f.err)}
	}
	reason := f.err.Error()
	now := time.Now()
	next := now
	counted := false
	if probe && f.kind != failLink && f.kind != failPaused {
		u.link.up() // the server answered about the file: the link works
	}
	switch f.kind {
	case failFile:
		log.Warn("quarantined", "reason", reason)
		if qerr := u.store.Quarantine(ctx, item.ID, owner, reason); qerr != nil {
			return fmt.Errorf("uploader: item %s: quarantine: %w (after: %w)", item.ID, qerr, err)
		}
		return fmt.Errorf("uploader: item %s: quarantined: %w", item.ID, err)
	case failLink:
		u.forgetCapabilities()
		u.link.fail(LinkDown, cmp.Or(f.cause, CauseNetwork), reason, probe, u.probeBackoff, f.retryAfter)
		log.Debug("link failure; the item waits for the link", "err", reason)
	case failPaused:
		u.forgetCapabilities()
		u.link.fail(LinkPaused, cmp.Or(f.cause, CauseConfig), reason, probe, u.probeBackoff, f.retryAfter)
		log.Debug("uploads paused; the item waits", "err", reason)
	case failLater:
		next = now.Add(max(f.retryAfter, u.backoff(item.Attempts+1)))
		log.Info("try later", "err", reason, "next", next)
	case failCounted:
		u.forgetCapabilities()
		counted = true
		if item.Attempts+1 >= u.opts.Retry.MaxAttempts {
			reason = fmt.Sprintf("%s (attempt %d of %d)", reason, item.Attempts+1, u.opts.Retry.MaxAttempts)
			log.Warn("quarantined", "reason", reason)
			if qerr := u.store.Quarantine(ctx, item.ID, owner, reason); qerr != nil {
				return fmt.Errorf("uploader: item %s: quarantine: %w (after: %w)", item.ID, qerr, err)
			}
			return fmt.Errorf("uploader: item %s: quarantined after %d attempts: %w", item.ID, item.Attempts+1, err)
		}
		next = now.Add(max(f.retryAfter, u.backoff(item.Attempts+1)))
		log.Warn("attempt failed", "err", reason, "attempt", item.Attempts+1, "next", next)
	}
	if werr := u.store.MarkWaiting(ctx, item.ID, owner, next, reason, counted); werr != nil {
		return fmt.Errorf("uploader: item %s: mark waiting: %w (after: %w)", item.ID, werr, err)
	}
	return fmt.Errorf("uploader: item %s: %w", item.ID, err)
}

// probe tries a link that is not up: OPTIONS (capabilities afresh) and a HEAD
// under the endpoint that carries the token (401/403 if it is still refused). It
// reports whether the caller should go on and upload one item as the rest of the
// probe: when the link failed on answers about files (5xx, a foreign Location),
// only a real upload shows that it is well again.
func (u *Uploader) probe(ctx context.Context) bool {
	cause := u.link.cause()
	u.forgetCapabilities()
	err := u.probeRequests(ctx)
	switch {
	case ctx.Err() != nil:
		u.link.probeDone()
		return false
	case err != nil:
		f, ok := errors.AsType[*failure](err)
		if !ok {
			f = &failure{kind: failLink, err: err}
		}
		state, def := LinkDown, CauseNetwork
		if f.kind == failPaused {
			state, def = LinkPaused, CauseConfig
		}
		u.link.fail(state, cmp.Or(f.cause, def), f.err.Error(), true, u.probeBackoff, f.retryAfter)
		return false
	case cause == CauseServer || cause == CauseConfig:
		return true
	default:
		u.link.up()
		return false
	}
}

func (u *Uploader) probeRequests(ctx context.Context) error {
	caps, err := u.capabilities(ctx)
	if err != nil {
		return err
	}
	if u.opts.RequireVerification && caps.algo == "" {
		return &failure{kind: failPaused, cause: CauseConfig, err: fmt.Errorf("server at %s %w", redact(u.endpoint.String()), ErrNoChecksumSupport)}
	}
	target := *u.endpoint
	target.Path = strings.TrimSuffix(target.Path, "/") + "/courier-probe"
	target.RawPath = ""
	r, err := u.send(ctx, http.MethodHead, target.String(), nil, nil, 0)
	if err != nil {
		return err
	}
	switch {
	case r.code == http.StatusUnauthorized || r.code == http.StatusForbidden,
		r.code >= 300 && r.code < 400:
		return r.classify()
	case r.code >= 500:
		return &failure{kind: failLink, cause: CauseServer, code: r.code, retryAfter: retryAfter(r.header),
			err: fmt.Errorf("%w: %w", ErrServer, &StatusError{Method: r.method, URL: r.url, Code: r.code, Body: r.body})}
	}
	return nil
}

// transfer runs the tus conversation for one item and returns the verified location.
func (u *Uploader) transfer(ctx context.Context, item *spool.Item, owner string, log *slog.Logger) (string, error) {
	f, err := u.store.OpenContent(item.ID)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, spool.ErrNotFound) {
		// The item was just leased, so it exists: its bytes are what is missing
		// (older spools say ErrNotFound, newer ones an error matching fs.ErrNotExist).
		// Waiting cannot bring them back.
		return "", fail(failFile, "spooled content of %s is missing: %w", item.ID, err)
	}
	if err != nil {
		return "", fail(failLater, "open spooled content of %s: %w", item.ID, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return "", fail(failLater, "stat spooled content of %s: %w", item.ID, err)
	} else if fi.Size() != item.Size {
		return "", fail(failFile, "spooled content of %s is %d bytes, expected %d", item.ID, fi.Size(), item.Size)
	}
	caps, err := u.capabilities(ctx)
	if err != nil {
		return "", err
	}
	if u.opts.RequireVerification && caps.algo == "" {
		return "", &failure{kind: failPaused, cause: CauseConfig, err: fmt.Errorf("server at %s %w", redact(u.endpoint.String()), ErrNoChecksumSupport)}
	}
	if item.Size > inlineLimit {
		// A large file: at most Options.Concurrency of them at once.
		select {
		case u.large <- struct{}{}:
			defer func() { <-u.large }()
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}
	t := &transfer{u: u, item: item, owner: owner, f: f, caps: caps, url: item.UploadURL, log: log}
	t.progress = u.track(item.ID, item.Size, log)
	defer t.progress.stop()
	return t.run(ctx)
}

// transfer is the state of one attempt.
type transfer struct {
	u        *Uploader
	item     *spool.Item
	owner    string
	f        *os.File
	caps     capabilities
	url      string // "" = not created (or forgotten)
	offset   int64  // what the server holds, as far as we know
	complete bool   // a HEAD just saw offset == size without Courier-Sha256
	log      *slog.Logger
	progress *tracker
	buf      []byte
}

func (t *transfer) run(ctx context.Context) (string, error) {
	if t.url != "" && t.u.inside(t.url) != nil {
		// upload.endpoint was changed (a new ingest server): an upload begun at the
		// old one is not resumed there; the new server is asked by courier-id.
		t.log.Info("upload was begun at another endpoint; creating it at the configured one")
		if err := t.forget(ctx); err != nil {
			return "", err
		}
	}
	for round := 0; ; round++ {
		if round > 3 {
			return "", fail(failCounted, "server lost the upload %d times in one attempt", round)
		}
		var verified bool
		var err error
		if t.url == "" {
			verified, err = t.create(ctx)
		} else {
			verified, err = t.head(ctx)
		}
		if err == nil && !verified {
			verified, err = t.patchAll(ctx)
		}
		if errors.Is(err, errGone) {
			t.log.Info("server lost the upload, creating it again", "url", t.url)
			if err := t.forget(ctx); err != nil {
				return "", err
			}
			continue
		}
		if err != nil {
			return "", err
		}
		if verified {
			return t.url, nil
		}
		// Complete, but the server did not confirm the digest.
		if t.u.opts.RequireVerification {
			return "", &failure{kind: failCounted, err: fmt.Errorf("%w: no Courier-Sha256 from %s", ErrNotVerified, t.url)}
		}
		t.log.Warn("server cannot verify uploads; keeping the item waiting", "url", t.url)
		return "", &failure{kind: failLater, err: fmt.Errorf("%w: no Courier-Sha256 from %s", ErrNotVerified, t.url)}
	}
}

// inside checks that an upload URL belongs to the configured endpoint: same
// scheme (so no https→http downgrade), host and port, a path below the endpoint's,
// no credentials and no dot segments. The token and the bytes go nowhere else.
func (u *Uploader) inside(raw string) error {
	v, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("unreadable URL: %w", err)
	}
	e := u.endpoint
	prefix := strings.TrimSuffix(e.Path, "/") + "/"
	switch {
	case v.User != nil:
		return errors.New("it carries credentials")
	case v.Opaque != "" || !strings.EqualFold(v.Scheme, e.Scheme):
		return fmt.Errorf("scheme %q, the endpoint's is %q", v.Scheme, e.Scheme)
	case !strings.EqualFold(v.Hostname(), e.Hostname()) || port(v) != port(e):
		return fmt.Errorf("host %s, the endpoint's is %s", v.Host, e.Host)
	case !strings.HasPrefix(v.Path, prefix) || len(v.Path) == len(prefix):
		return fmt.Errorf("path %s is not below the endpoint's %s", v.EscapedPath(), prefix)
	}
	for seg := range strings.SplitSeq(v.Path, "/") {
		if seg == ".." || seg == "." {
			return fmt.Errorf("path %s has dot segments", v.EscapedPath())
		}
	}
	if strings.Contains(strings.ToLower(v.RawPath), "%2f") || strings.Contains(v.Path, "\\") {
		return fmt.Errorf("path %s has escaped separators", v.EscapedPath())
	}
	return nil
}

// port is the URL's port, or its scheme's default.
func port(v *url.URL) string {
	if p := v.Port(); p != "" {
		return p
	}
	if strings.EqualFold(v.Scheme, "https") {
		return "443"
	}
	return "80"
}

// forget drops the upload URL here and in the store.
func (t *transfer) forget(ctx context.Context) error {
	t.url, t.offset, t.complete = "", 0, false
	return t.setURL(ctx, "")
}

func (t *transfer) setURL(ctx context.Context, url string) error {
	err := t.u.store.SetUploadURL(ctx, t.item.ID, t.owner, url)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, spool.ErrLeaseLost):
		return &failure{kind: failLeaseLost, err: err}
	case ctx.Err() != nil:
		return context.Cause(ctx)
	default:
		return fail(failLater, "record upload URL of %s: %w", t.item.ID, err)
	}
}

// verifiedBy reports whether the answer carries the item's digest; a different
// digest is a whole-file mismatch.
func (t *transfer) verifiedBy(h http.Header) (bool, error) {
	got := strings.TrimSpace(h.Get("Courier-Sha256"))
	if got == "" {
		return false, nil
	}
	if strings.EqualFold(got, t.item.SHA256) {
		return true, nil
	}
	return false, &failure{kind: failCounted, err: fmt.Errorf("%w: server holds SHA-256 %s for %s, expected %s",
		ErrChecksumMismatch, got, t.item.ID, t.item.SHA256)}
}

// wholeFileMismatch decides what the server's whole-file 460 means. If the
// spooled bytes no longer have the item's SHA-256 (a disk fault, a change under
// us), sending them again cannot help: quarantine. Otherwise the bytes were spoilt
// on the way in a way the chunk checksums missed: a counted retry from scratch.
func (t *transfer) wholeFileMismatch(f *failure) error {
	h := sha256.New()
	if t.buf == nil {
		t.buf = make([]byte, 64<<10)
	}
	if _, err := io.CopyBuffer(h, io.NewSectionReader(t.f, 0, t.item.Size), t.buf); err != nil {
		return fail(failLater, "read spooled content of %s: %w", t.item.ID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != t.item.SHA256 {
		return &failure{kind: failFile, err: fmt.Errorf("%w: spooled content of %s has SHA-256 %s, recorded %s: it changed after intake",
			ErrChecksumMismatch, t.item.ID, got, t.item.SHA256)}
	}
	f.err = fmt.Errorf("whole file: %w", f.err)
	return f
}

// metadata builds Upload-Metadata: keys sorted, values base64.
func (t *transfer) metadata() string {
	kv := map[string]string{
		"courier-id": t.item.ID,
		"sha256":     t.item.SHA256,
		"filetype":   t.item.ContentType,
		"agent":      t.u.opts.AgentID,
		"source":     t.item.Source,
	}
	if t.u.opts.SendFilenames {
		kv["filename"] = t.item.Filename
	}
	// An MQTT feed's device (its '+' levels) and feed filter; never a file name.
	for _, k := range []string{"device", "feed"} {
		if v := t.item.Meta[k]; v != "" {
			kv[k] = v
		}
	}
	keys := make([]string, 0, len(kv))
	for k, v := range kv {
		if v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + base64.StdEncoding.EncodeToString([]byte(kv[k]))
	}
	return strings.Join(parts, ",")
}

// create POSTs a new upload (or, for a courier-id the server already holds, gets
// the existing one back) and records its URL before any PATCH. Small files travel
// in the POST itself.
func (t *transfer) create(ctx context.Context) (bool, error) {
	size := t.item.Size
	hdr := http.Header{}
	hdr.Set("Upload-Length", strconv.FormatInt(size, 10))
	hdr.Set("Upload-Metadata", t.metadata())
	var body io.Reader
	inline := t.caps.creationWithUpload && size > 0 && size <= min(t.u.chunk.Load(), inlineLimit)
	if inline {
		sum, err := t.checksum(0, size)
		if err != nil {
			return false, err
		}
		if sum != "" {
			hdr.Set("Upload-Checksum", sum)
		}
		hdr.Set("Content-Type", "application/offset+octet-stream")
		body = t.body(ctx, 0, size)
	}
	r, err := t.u.send(ctx, http.MethodPost, t.u.endpoint.String(), hdr, body, size)
	if err != nil {
		return false, err
	}
	if r.code != http.StatusCreated && r.code != http.StatusOK {
		if r.code == http.StatusNotFound || r.code == http.StatusMethodNotAllowed {
			// The endpoint itself is wrong: no file is at fault.
			return false, failc(failPaused, CauseConfig, "create upload at %s: %w", redact(t.u.endpoint.String()), &StatusError{Method: r.method, URL: r.url, Code: r.code, Body: r.body})
		}
		if r.code == http.StatusConflict && strings.Contains(r.body, "ERR_COURIER_ID_EXISTS") {
			// The server holds this file id with another length: waiting cannot fix
			// that, a person must look (the server's answer says what it holds).
			return false, fail(failFile, "create upload for %s: %w", t.item.ID, &StatusError{Method: r.method, URL: r.url, Code: r.code, Body: r.body})
		}
		f := r.classify()
		if r.code == 460 && inline {
			return false, t.wholeFileMismatch(f)
		}
		return false, f
	}
	loc := r.header.Get("Location")
	if loc == "" {
		return false, fail(failCounted, "create upload for %s: %d without Location", t.item.ID, r.code)
	}
	abs, err := t.u.resolve(loc)
	if err != nil {
		return false, fail(failCounted, "create upload for %s: unreadable Location: %w", t.item.ID, err)
	}
	if err := t.u.inside(abs); err != nil {
		// Every file would get the same answer: the server (or a proxy) is not the
		// one configured. Nothing more is sent there; a person must look.
		return false, &failure{kind: failPaused, cause: CauseConfig, err: fmt.Errorf("create upload for %s: the server's Location %s is %w %s (%v); not followed",
			t.item.ID, redact(abs), ErrOutsideEndpoint, redact(t.u.endpoint.String()), err)}
	}
	t.url, t.offset, t.complete = abs, 0, false
	if off, err := strconv.ParseInt(r.header.Get("Upload-Offset"), 10, 64); err == nil && off >= 0 && off <= size {
		t.offset = off
	}
	t.progress.report(t.offset, true)
	if t.offset == size {
		// Creation with upload (or a file the server already holds) finished the
		// file in this request. Verified, it needs no stored URL: a restart before
		// MarkVerified creates again with the same courier-id and gets this upload back.
		verified, err := t.verifiedBy(r.header)
		if err != nil || verified {
			t.log.Debug("upload created and complete", "url", redact(abs), "size", size, "inline", inline, "verified", verified)
			return verified, err
		}
	}
	if err := t.setURL(ctx, abs); err != nil {
		return false, err
	}
	t.log.Debug("upload created", "url", redact(abs), "size", size, "inline", inline)
	return false, nil
}

// head asks the server what it holds (resume, or resync after an error).
func (t *transfer) head(ctx context.Context) (bool, error) {
	for try := 0; ; try++ {
		r, err := t.u.send(ctx, http.MethodHead, t.url, nil, nil, 0)
		if err != nil {
			return false, err
		}
		switch {
		case r.code == http.StatusOK || r.code == http.StatusNoContent:
		case r.code == http.StatusNotFound || r.code == http.StatusGone:
			return false, errGone
		case r.code == http.StatusLocked && try < 5:
			// The server may still be finishing a request whose connection we lost.
			if err := sleep(ctx, time.Duration(try+1)*200*time.Millisecond); err != nil {
				return false, err
			}
			continue
		default:
			return false, r.classify()
		}
		if l := r.header.Get("Upload-Length"); l != "" && l != strconv.FormatInt(t.item.Size, 10) {
			return false, fail(failFile, "server holds an upload of length %s for %s, the file has %d bytes", l, t.item.ID, t.item.Size)
		}
		off, err := strconv.ParseInt(r.header.Get("Upload-Offset"), 10, 64)
		if err != nil || off < 0 || off > t.item.Size {
			return false, fail(failCounted, "HEAD %s: bad Upload-Offset %q", t.url, r.header.Get("Upload-Offset"))
		}
		t.offset = off
		t.progress.report(off, true)
		verified, err := t.verifiedBy(r.header)
		if err != nil {
			// The server keeps other bytes under this URL: start afresh next time.
			if ferr := t.forget(ctx); ferr != nil {
				return false, ferr
			}
			return false, err
		}
		t.complete = off == t.item.Size && !verified
		return verified, nil
	}
}

// patchAll sends the rest of the file in chunks. It returns true once the server
// confirmed the digest, false when the upload is complete without confirmation.
func (t *transfer) patchAll(ctx context.Context) (bool, error) {
	size := t.item.Size
	stuck := 0             // errors in a row without progress
	stuckKind := failLater // failLink when the last of them was the network's
	for t.offset < size {
		if stuck > 3 {
			return false, fail(stuckKind, "upload of %s makes no progress at offset %d", t.item.ID, t.offset)
		}
		off := t.offset
		n := min(t.u.chunk.Load(), size-off)
		sum, err := t.checksum(off, n)
		if err != nil {
			return false, err
		}
		hdr := http.Header{}
		hdr.Set("Upload-Offset", strconv.FormatInt(off, 10))
		hdr.Set("Content-Type", "application/offset+octet-stream")
		if sum != "" {
			hdr.Set("Upload-Checksum", sum)
		}
		r, err := t.u.send(ctx, http.MethodPatch, t.url, hdr, t.body(ctx, off, n), n)
		if f, ok := errors.AsType[*failure](err); ok && f.kind == failLink {
			stuck, stuckKind = stuck+1, failLink
			t.u.chunkInterrupted(t.log)
			t.log.Debug("chunk interrupted, asking the server for its offset", "offset", off, "size", n, "err", err)
			if verified, err := t.head(ctx); err != nil || verified {
				return verified, err
			}
			continue
		}
		if err != nil {
			return false, err
		}
		switch r.code {
		case http.StatusNoContent, http.StatusOK:
			newOff, err := strconv.ParseInt(r.header.Get("Upload-Offset"), 10, 64)
			if err != nil || newOff <= off || newOff > size {
				stuck, stuckKind = stuck+1, failLater
				if verified, err := t.head(ctx); err != nil || verified {
					return verified, err
				}
				continue
			}
			stuck = 0
			t.u.chunkDone()
			t.offset = newOff
			t.progress.report(newOff, false)
			if newOff == size {
				verified, err := t.verifiedBy(r.header)
				if err != nil {
					if ferr := t.forget(ctx); ferr != nil {
						return false, ferr
					}
					return false, err
				}
				if verified {
					return true, nil
				}
				t.complete = false
			}
		case http.StatusConflict, http.StatusLocked:
			stuck, stuckKind = stuck+1, failLater
			if r.code == http.StatusLocked {
				if err := sleep(ctx, time.Duration(stuck)*200*time.Millisecond); err != nil {
					return false, err
				}
			}
			if verified, err := t.head(ctx); err != nil || verified {
				return verified, err
			}
		case http.StatusNotFound, http.StatusGone:
			return false, errGone
		case 460:
			f := r.classify()
			if off+n == size {
				// The last chunk: either it or the whole file failed. After a whole-file
				// mismatch the server has discarded the upload; then start from scratch.
				if _, err := t.head(ctx); errors.Is(err, errGone) {
					if ferr := t.forget(ctx); ferr != nil {
						return false, ferr
					}
					return false, t.wholeFileMismatch(f)
				}
			}
			if off == 0 && n == size {
				// The whole file in one chunk, its checksum taken from the recorded
				// SHA-256 without reading it: a mismatch may mean the bytes changed.
				return false, t.wholeFileMismatch(f)
			}
			// The chunk is resent by the next attempt, which resumes at the server's offset.
			return false, f
		default:
			return false, r.classify()
		}
	}
	if t.complete {
		return false, nil
	}
	// Complete, but the answer did not carry the digest: ask once more.
	verified, err := t.head(ctx)
	if err != nil {
		return false, err
	}
	return verified, nil
}

// checksum reads [off, off+n) once and returns the Upload-Checksum value, or ""
// when the server cannot check chunks. The whole file's SHA-256 is known from
// intake and not computed again.
func (t *transfer) checksum(off, n int64) (string, error) {
	if t.caps.algo == "sha256" && off == 0 && n == t.item.Size {
		if sum, err := hex.DecodeString(t.item.SHA256); err == nil && len(sum) == sha256.Size {
			return "sha256 " + base64.StdEncoding.EncodeToString(sum), nil
		}
	}
	var h hash.Hash
	switch t.caps.algo {
	case "sha256":
		h = sha256.New()
	case "sha1":
		h = sha1.New()
	default:
		return "", nil
	}
	if t.buf == nil {
		t.buf = make([]byte, 64<<10)
	}
	if _, err := io.CopyBuffer(h, io.NewSectionReader(t.f, off, n), t.buf); err != nil {
		return "", fail(failLater, "read spooled content of %s at %d: %w", t.item.ID, off, err)
	}
	return t.caps.algo + " " + base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

// body reads [off, off+n) a second time for sending, paced by the shared limiter.
func (t *transfer) body(ctx context.Context, off, n int64) io.Reader {
	var r io.Reader = io.NewSectionReader(t.f, off, n)
	if t.u.limiter != nil {
		r = &limitedReader{ctx: ctx, r: r, lim: t.u.limiter}
	}
	if t.progress != nil {
		sent := off
		r = &watchedReader{r: r, onRead: func(k int) {
			sent += int64(k)
			t.progress.report(sent, false)
		}}
	}
	return r
}

// limiterBurst keeps each limiter wait short, so pacing is smooth.
func limiterBurst(limit int64) int {
	return int(min(max(limit/8, 1024), 64<<10))
}

// limitedReader waits for the shared limiter before every read.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if b := l.lim.Burst(); len(p) > b {
		p = p[:b]
	}
	n, err := l.r.Read(p)
	if n > 0 {
		if werr := l.lim.WaitN(l.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
