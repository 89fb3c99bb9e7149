package uploader

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"sync"
)

// faults sits in front of the real server on loopback and injects the failures a
// clinic's link produces. It also counts the body bytes the client sent, to check
// how much an interruption costs.
type faults struct {
	next http.Handler

	mu        sync.Mutex
	sent      int64          // PATCH and POST body bytes read from the client
	requests  map[string]int // per method
	metadata  []string       // Upload-Metadata of every POST
	algoUsed  map[string]int // algorithm of every Upload-Checksum header
	corrupt   int            // flip a byte in the next n PATCH bodies
	forge     int            // flip a byte in the next n PATCH bodies and fix Upload-Checksum to match
	algos     string         // replace Tus-Checksum-Algorithm in OPTIONS answers ("" = leave)
	fail      int            // answer the next n PATCHes with 500
	drop      int            // close the connection halfway through the next n PATCH bodies
	stall     int            // hold the next n PATCHes until the client gives up
	lose      int            // let the server handle the next n PATCHes, then cut the connection before the answer
	notFound  int            // answer the next n HEADs with 404
	answer    map[string]int // method -> status for every such request while set
	noCheck   bool           // hide the checksum extension from OPTIONS
	noDigest  bool           // remove Courier-Sha256 from every answer
	down      bool           // close every connection at once (link down)
	stalledCh chan struct{}  // gets a value when a PATCH is being held

	answerBody  string // body of the answers set in answer ("" = "injected failure")
	retryAfter  string // Retry-After of the answers set in answer
	locationTo  string // replace the Location of POST answers with this (a lying proxy)
	redirectTo  string // answer POSTs with 307 to this
	dropEvery   int64  // cut the connection once this many body bytes went through since the last cut
	dropBudget  int64
	drops       int
	answerCount int // answers given from answer
}

func newFaults(next http.Handler) *faults {
	return &faults{next: next, requests: map[string]int{}, answer: map[string]int{}, algoUsed: map[string]int{},
		stalledCh: make(chan struct{}, 16)}
}

func (f *faults) set(fn func(f *faults)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faults) get() (sent int64, requests map[string]int, metadata []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	requests = map[string]int{}
	for k, v := range f.requests {
		requests[k] = v
	}
	return f.sent, requests, append([]string(nil), f.metadata...)
}

func (f *faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	take := func(n *int) bool {
		if *n > 0 {
			*n--
			return true
		}
		return false
	}
	f.mu.Lock()
	f.requests[r.Method]++
	if r.Method == http.MethodPost {
		f.metadata = append(f.metadata, r.Header.Get("Upload-Metadata"))
	}
	if algo, _, ok := strings.Cut(r.Header.Get("Upload-Checksum"), " "); ok {
		f.algoUsed[algo]++
	}
	code := f.answer[r.Method]
	var corrupt, forge, fail, drop, stall, lose, notFound bool
	switch r.Method {
	case http.MethodPatch:
		corrupt, forge, fail, drop, stall = take(&f.corrupt), take(&f.forge), take(&f.fail), take(&f.drop), take(&f.stall)
		lose = take(&f.lose)
	case http.MethodHead:
		notFound = take(&f.notFound)
	}
	noCheck, noDigest, down, algos := f.noCheck, f.noDigest, f.down, f.algos
	answerBody, retryAfterHdr, locationTo, redirectTo := f.answerBody, f.retryAfter, f.locationTo, f.redirectTo
	if code != 0 {
		f.answerCount++
	}
	var cutAfter int64 = -1
	if f.dropEvery > 0 && r.ContentLength > 0 && (r.Method == http.MethodPatch || r.Method == http.MethodPost) {
		if f.dropBudget <= 0 {
			f.dropBudget = f.dropEvery
		}
		if r.ContentLength > f.dropBudget {
			cutAfter = f.dropBudget
			f.dropBudget = f.dropEvery
			f.drops++
		} else {
			f.dropBudget -= r.ContentLength
		}
	}
	f.mu.Unlock()

	if cutAfter >= 0 {
		// The link drops in the middle of this body: the server never sees it.
		io.CopyN(io.Discard, r.Body, cutAfter)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	if redirectTo != "" && r.Method == http.MethodPost {
		io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, redirectTo, http.StatusTemporaryRedirect)
		return
	}
	if locationTo != "" && r.Method == http.MethodPost {
		w = &headerHook{ResponseWriter: w, before: func(h http.Header) {
			if h.Get("Location") != "" {
				h.Set("Location", locationTo)
			}
		}}
	}

	if down {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	}

	if r.Method == http.MethodPatch || r.Method == http.MethodPost {
		r.Body = &countingBody{ReadCloser: r.Body, f: f}
	}
	switch {
	case code != 0:
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Tus-Resumable", "1.0.0")
		if retryAfterHdr != "" {
			w.Header().Set("Retry-After", retryAfterHdr)
		}
		http.Error(w, cmp.Or(answerBody, "injected failure"), code)
		return
	case fail:
		io.Copy(io.Discard, r.Body)
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	case notFound:
		http.Error(w, "injected: upload not found", http.StatusNotFound)
		return
	case stall:
		io.Copy(io.Discard, r.Body)
		f.stalledCh <- struct{}{}
		<-r.Context().Done()
		return
	case drop:
		io.CopyN(io.Discard, r.Body, r.ContentLength/2)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if corrupt {
		r.Body = &flipBody{ReadCloser: r.Body, at: 100}
	}
	if forge {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		body[len(body)/2] ^= 0xff
		sum := sha256.Sum256(body)
		r.Header.Set("Upload-Checksum", "sha256 "+base64.StdEncoding.EncodeToString(sum[:]))
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if algos != "" && r.Method == http.MethodOptions {
		w = &headerHook{ResponseWriter: w, before: func(h http.Header) { h.Set("Tus-Checksum-Algorithm", algos) }}
	}
	if noCheck && r.Method == http.MethodOptions {
		w = &headerHook{ResponseWriter: w, before: func(h http.Header) {
			h.Set("Tus-Extension", strings.ReplaceAll(h.Get("Tus-Extension"), ",checksum", ""))
			h.Del("Tus-Checksum-Algorithm")
		}}
	}
	if lose {
		f.next.ServeHTTP(&lostAnswer{header: http.Header{}}, r)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	if noDigest {
		w = &headerHook{ResponseWriter: w, before: func(h http.Header) { h.Del("Courier-Sha256") }}
	}
	f.next.ServeHTTP(w, r)
}

type countingBody struct {
	io.ReadCloser
	f *faults
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.f.mu.Lock()
	c.f.sent += int64(n)
	c.f.mu.Unlock()
	return n, err
}

// flipBody inverts one byte of the body, as a bad cable or a broken proxy might.
type flipBody struct {
	io.ReadCloser
	at  int64
	pos int64
}

func (b *flipBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.at >= b.pos && b.at < b.pos+int64(n) {
		p[b.at-b.pos] ^= 0xff
	}
	b.pos += int64(n)
	return n, err
}

// headerHook changes the response header just before it is written.
type headerHook struct {
	http.ResponseWriter
	before func(http.Header)
	done   bool
}

func (h *headerHook) WriteHeader(code int) {
	if !h.done {
		h.done = true
		h.before(h.Header())
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *headerHook) Write(b []byte) (int, error) {
	if !h.done {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(b)
}

func (h *headerHook) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// lostAnswer swallows an answer that never reaches the client.
type lostAnswer struct{ header http.Header }

func (l *lostAnswer) Header() http.Header         { return l.header }
func (l *lostAnswer) Write(b []byte) (int, error) { return len(b), nil }
func (l *lostAnswer) WriteHeader(int)             {}
