package ingest

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("INGEST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testServer is an ingest Server on a loopback port.
type testServer struct {
	t    testing.TB
	srv  *Server
	http *httptest.Server
	url  string // the tus endpoint, ".../files/"
	dir  string
	c    *http.Client
	tok  string
}

func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	if opts.Store == "" {
		dir := t.TempDir()
		opts.Store = "file://" + dir
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	ts := &testServer{t: t, srv: srv, http: hs, url: hs.URL + "/files/", c: hs.Client()}
	if strings.HasPrefix(opts.Store, "file://") {
		ts.dir = strings.TrimPrefix(opts.Store, "file://")
	}
	t.Cleanup(ts.close)
	return ts
}

func (ts *testServer) close() {
	if ts.http != nil {
		ts.http.Close()
		ts.srv.Close()
		ts.http = nil
	}
}

type upload struct {
	id     string // courier-id
	data   []byte
	digest string
	agent  string // the agent metadata, if set
}

func newUpload(size int) upload {
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16)})
	_, _ = r.Read(data)
	sum := sha256.Sum256(data)
	id, _ := uuid.NewV7()
	return upload{id: id.String(), data: data, digest: hex.EncodeToString(sum[:])}
}

func (u upload) metadata(extra ...string) string {
	kv := map[string]string{"courier-id": u.id, "sha256": u.digest, "filetype": "application/octet-stream"}
	if u.agent != "" {
		kv["agent"] = u.agent
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(kv, extra[i])
		} else {
			kv[extra[i]] = extra[i+1]
		}
	}
	return encodeMeta(kv)
}

func encodeMeta(kv map[string]string) string {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+" "+base64.StdEncoding.EncodeToString([]byte(kv[k])))
	}
	return strings.Join(parts, ",")
}

func checksum(alg string, p []byte) string {
	var sum []byte
	switch alg {
	case "sha1":
		s := sha1.Sum(p)
		sum = s[:]
	case "sha256":
		s := sha256.Sum256(p)
		sum = s[:]
	case "md5":
		s := md5.Sum(p)
		sum = s[:]
	case "crc32":
		s := crc32.ChecksumIEEE(p)
		sum = []byte{byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}
	}
	return alg + " " + base64.StdEncoding.EncodeToString(sum)
}

func (ts *testServer) do(req *http.Request) *http.Response {
	ts.t.Helper()
	if ts.tok != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+ts.tok)
	}
	resp, err := ts.c.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (ts *testServer) post(meta string, length int, body []byte, hdr ...string) *http.Response {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(http.MethodPost, ts.url, rd)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", strconv.Itoa(length))
	if meta != "" {
		req.Header.Set("Upload-Metadata", meta)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/offset+octet-stream")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return ts.do(req)
}

func (ts *testServer) create(u upload) string {
	ts.t.Helper()
	resp := ts.post(u.metadata(), len(u.data), nil)
	if resp.StatusCode != http.StatusCreated {
		ts.t.Fatalf("POST: status %d, want 201", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

func (ts *testServer) patch(loc string, offset int64, chunk []byte, sum string, hdr ...string) *http.Response {
	ts.t.Helper()
	req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(chunk))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	if sum != "" {
		req.Header.Set("Upload-Checksum", sum)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return ts.do(req)
}

func (ts *testServer) head(loc string) *http.Response {
	ts.t.Helper()
	req, _ := http.NewRequest(http.MethodHead, loc, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	return ts.do(req)
}

func offsetOf(t testing.TB, resp *http.Response) int64 {
	t.Helper()
	n, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
	if err != nil {
		t.Fatalf("Upload-Offset %q (status %d): %v", resp.Header.Get("Upload-Offset"), resp.StatusCode, err)
	}
	return n
}

// sendChunks uploads u.data[from:] in chunks with alg checksums and
// returns the final PATCH response.
func (ts *testServer) sendChunks(loc string, u upload, from int64, chunk int, alg string) *http.Response {
	ts.t.Helper()
	var resp *http.Response
	for off := from; off < int64(len(u.data)); {
		end := min(off+int64(chunk), int64(len(u.data)))
		part := u.data[off:end]
		sum := ""
		if alg != "" {
			sum = checksum(alg, part)
		}
		resp = ts.patch(loc, off, part, sum)
		if resp.StatusCode != http.StatusNoContent {
			ts.t.Fatalf("PATCH at %d: status %d", off, resp.StatusCode)
		}
		if got := offsetOf(ts.t, resp); got != end {
			ts.t.Fatalf("PATCH at %d: offset %d, want %d", off, got, end)
		}
		off = end
	}
	return resp
}

func (ts *testServer) storedBytes(id string) []byte {
	ts.t.Helper()
	data, err := os.ReadFile(filepath.Join(ts.dir, id))
	if err != nil {
		ts.t.Fatalf("stored object %s: %v", id, err)
	}
	return data
}

func counter(t testing.TB, s *Server, name string) float64 {
	t.Helper()
	switch name {
	case "verified":
		return testutil.ToFloat64(s.metrics.verified)
	case "fallback":
		return testutil.ToFloat64(s.metrics.fallback)
	case "catchup":
		return testutil.ToFloat64(s.metrics.catchUp)
	case "chunk", "file":
		return testutil.ToFloat64(s.metrics.mismatch.WithLabelValues(name))
	case "auth":
		return testutil.ToFloat64(s.metrics.authFailures)
	case "expired":
		return testutil.ToFloat64(s.metrics.expired)
	case "bytes":
		return testutil.ToFloat64(s.metrics.bytes)
	}
	t.Fatalf("unknown counter %s", name)
	return 0
}
