package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOptionsAnnouncesChecksum(t *testing.T) {
	ts := startServer(t, Options{MaxSize: 1 << 30})
	req, _ := http.NewRequest(http.MethodOptions, ts.url, nil)
	req.Header.Set("Origin", "https://example.org")
	req.Header.Set("Access-Control-Request-Method", "PATCH")
	resp := ts.do(req)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("OPTIONS: status %d", resp.StatusCode)
	}
	ext := resp.Header.Get("Tus-Extension")
	for _, want := range []string{"creation", "creation-with-upload", "termination", "checksum"} {
		if !strings.Contains(","+ext+",", ","+want+",") {
			t.Errorf("Tus-Extension %q lacks %s", ext, want)
		}
	}
	if got := resp.Header.Get("Tus-Checksum-Algorithm"); got != "sha1,sha256,md5,crc32" {
		t.Errorf("Tus-Checksum-Algorithm = %q", got)
	}
	if got := resp.Header.Get("Tus-Max-Size"); got != "1073741824" {
		t.Errorf("Tus-Max-Size = %q", got)
	}
	if !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Upload-Checksum") {
		t.Errorf("CORS allow headers %q lack Upload-Checksum", resp.Header.Get("Access-Control-Allow-Headers"))
	}

	// An actual cross-origin request may read Courier-Sha256.
	req, _ = http.NewRequest(http.MethodHead, ts.url+"nothing", nil)
	req.Header.Set("Origin", "https://example.org")
	resp = ts.do(req)
	if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Courier-Sha256") {
		t.Errorf("CORS expose headers %q lack Courier-Sha256", resp.Header.Get("Access-Control-Expose-Headers"))
	}
}

func TestChunkedUploadIsVerified(t *testing.T) {
	for _, alg := range []string{"sha256", "sha1", "md5", "crc32"} {
		t.Run(alg, func(t *testing.T) {
			ts := startServer(t, Options{})
			u := newUpload(300_000)
			loc := ts.create(u)
			if !strings.HasSuffix(loc, "/files/"+u.id) {
				t.Fatalf("Location %q is not named after courier-id %s", loc, u.id)
			}
			resp := ts.sendChunks(loc, u, 0, 64<<10, alg)
			if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
				t.Fatalf("final PATCH Courier-Sha256 = %q, want %s", got, u.digest)
			}
			if got := ts.head(loc).Header.Get("Courier-Sha256"); got != u.digest {
				t.Fatalf("HEAD Courier-Sha256 = %q, want %s", got, u.digest)
			}
			if !bytes.Equal(ts.storedBytes(u.id), u.data) {
				t.Fatal("stored bytes differ from the upload")
			}
			if n := counter(t, ts.srv, "fallback"); n != 0 {
				t.Errorf("digest fallbacks = %v, want 0", n)
			}
			if n := counter(t, ts.srv, "verified"); n != 1 {
				t.Errorf("verified = %v, want 1", n)
			}
		})
	}
}

func TestBadChunkIsRefusedAndResent(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(200_000)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:100_000]}, 0, 50_000, "sha256")

	bad := bytes.Clone(u.data[100_000:150_000])
	bad[7] ^= 0xff
	resp := ts.patch(loc, 100_000, bad, checksum("sha256", u.data[100_000:150_000]))
	if resp.StatusCode != StatusChecksumMismatch {
		t.Fatalf("corrupted chunk: status %d, want 460", resp.StatusCode)
	}
	if got := offsetOf(t, ts.head(loc)); got != 100_000 {
		t.Fatalf("offset after refused chunk = %d, want 100000", got)
	}
	if n := counter(t, ts.srv, "chunk"); n != 1 {
		t.Errorf("chunk mismatches = %v, want 1", n)
	}
	resp = ts.sendChunks(loc, u, 100_000, 50_000, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
	}
	if !bytes.Equal(ts.storedBytes(u.id), u.data) {
		t.Fatal("stored bytes differ from the upload")
	}
}

func TestLargeChunkSpillsAndIsChecked(t *testing.T) {
	ts := startServer(t, Options{TempDir: t.TempDir()})
	u := newUpload(DefaultChunkMemory + 5<<20 + 123)
	loc := ts.create(u)
	bad := bytes.Clone(u.data)
	bad[len(bad)-1] ^= 1
	if resp := ts.patch(loc, 0, bad, checksum("sha256", u.data)); resp.StatusCode != StatusChecksumMismatch {
		t.Fatalf("corrupted large chunk: status %d, want 460", resp.StatusCode)
	}
	resp := ts.sendChunks(loc, u, 0, len(u.data), "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
	}
}

func TestBadChecksumHeader(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(1000)
	loc := ts.create(u)
	for _, h := range []string{"sha512 " + strings.Split(checksum("sha256", u.data), " ")[1], "sha256", "sha256 !!notbase64", "sha256 AAAA"} {
		if resp := ts.patch(loc, 0, u.data, h); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("Upload-Checksum %q: status %d, want 400", h, resp.StatusCode)
		}
	}
	if got := offsetOf(t, ts.head(loc)); got != 0 {
		t.Fatalf("offset = %d, want 0", got)
	}
}

func TestWrongWholeFileDigestDiscardsUpload(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(100_000)
	other := newUpload(10)
	resp := ts.post(u.metadata("sha256", other.digest), len(u.data), nil)
	loc := resp.Header.Get("Location")
	ts.sendChunks(loc, upload{data: u.data[:60_000]}, 0, 60_000, "sha256")
	resp = ts.patch(loc, 60_000, u.data[60_000:], checksum("sha256", u.data[60_000:]))
	if resp.StatusCode != StatusChecksumMismatch {
		t.Fatalf("final PATCH with wrong file digest: status %d, want 460", resp.StatusCode)
	}
	if resp.Header.Get("Courier-Sha256") != "" {
		t.Fatal("a mismatched upload carries Courier-Sha256")
	}
	if st := ts.head(loc).StatusCode; st != http.StatusNotFound {
		t.Fatalf("HEAD after mismatch: status %d, want 404", st)
	}
	if _, err := os.Stat(filepath.Join(ts.dir, u.id)); !os.IsNotExist(err) {
		t.Fatalf("object of discarded upload still there: %v", err)
	}
	if n := counter(t, ts.srv, "file"); n != 1 {
		t.Errorf("file mismatches = %v, want 1", n)
	}
	// The agent uploads again under the same courier-id.
	loc2 := ts.create(u)
	if resp := ts.sendChunks(loc2, u, 0, 50_000, "sha256"); resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("second upload not verified")
	}
}

func TestSecondPostReturnsExistingUpload(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(100_000)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:40_000]}, 0, 40_000, "sha256")

	resp := ts.post(u.metadata(), len(u.data), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("second POST: status %d, want 201", resp.StatusCode)
	}
	if got := resp.Header.Get("Location"); got != loc {
		t.Fatalf("second POST Location = %q, want %q", got, loc)
	}
	if got := offsetOf(t, ts.head(loc)); got != 40_000 {
		t.Fatalf("HEAD offset = %d, want 40000", got)
	}
	ts.sendChunks(loc, u, 40_000, 40_000, "sha256")

	// And once complete: same Location, Courier-Sha256, nothing new.
	resp = ts.post(u.metadata(), len(u.data), nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != loc || resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatalf("POST after completion: status %d Location %q Courier-Sha256 %q", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Courier-Sha256"))
	}
	entries, _ := os.ReadDir(ts.dir)
	objects := 0
	for _, e := range entries {
		if !strings.Contains(e.Name(), ".") {
			objects++
		}
	}
	if objects != 1 {
		t.Fatalf("%d objects in the store, want 1", objects)
	}
}

func TestRestartResumesWithoutRereading(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Options{Store: "file://" + dir})
	u := newUpload(500_000)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:200_000]}, 0, 100_000, "sha256")
	ts.close()

	ts2 := startServer(t, Options{Store: "file://" + dir})
	loc2 := ts2.url + u.id
	if !strings.HasSuffix(loc, "/files/"+u.id) {
		t.Fatalf("Location %q", loc)
	}
	if got := offsetOf(t, ts2.head(loc2)); got != 200_000 {
		t.Fatalf("offset after restart = %d, want 200000", got)
	}
	resp := ts2.sendChunks(loc2, u, 200_000, 100_000, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
	}
	if n := counter(t, ts2.srv, "fallback"); n != 0 {
		t.Fatalf("digest fallbacks after restart = %v, want 0 (state should have been reused)", n)
	}
}

// A crash in the middle of writing a chunk leaves bytes in the store that the
// digest state has not seen; the next chunk hashes only that gap.
func TestDigestCatchesUpAfterPartialWrite(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Options{Store: "file://" + dir})
	u := newUpload(300_000)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:100_000]}, 0, 100_000, "sha256")
	ts.close()
	// What a SIGKILL mid-write leaves: 30,000 more bytes on disk, state at 100,000.
	f, err := os.OpenFile(filepath.Join(dir, u.id), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(u.data[100_000:130_000])
	f.Close()

	ts2 := startServer(t, Options{Store: "file://" + dir})
	if got := offsetOf(t, ts2.head(ts2.url+u.id)); got != 130_000 {
		t.Fatalf("offset = %d, want 130000", got)
	}
	resp := ts2.sendChunks(ts2.url+u.id, u, 130_000, 100_000, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
	}
	if n := counter(t, ts2.srv, "fallback"); n != 0 {
		t.Errorf("digest fallbacks = %v, want 0 (only the gap needed reading)", n)
	}
	if n := counter(t, ts2.srv, "catchup"); n != 1 {
		t.Errorf("digest catch-ups = %v, want 1", n)
	}
}

func TestLostDigestStateFallsBackToStoredBytes(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Options{Store: "file://" + dir})
	u := newUpload(300_000)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:100_000]}, 0, 100_000, "sha256")
	ts.close()
	if err := os.Remove(filepath.Join(dir, u.id+stateSuffix)); err != nil {
		t.Fatal(err)
	}

	ts2 := startServer(t, Options{Store: "file://" + dir})
	resp := ts2.sendChunks(ts2.url+u.id, u, 100_000, 100_000, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
	}
	if n := counter(t, ts2.srv, "fallback"); n != 1 {
		t.Fatalf("digest fallbacks = %v, want 1", n)
	}
}

func TestCreationWithUpload(t *testing.T) {
	ts := startServer(t, Options{})
	t.Run("whole file", func(t *testing.T) {
		u := newUpload(5000)
		resp := ts.post(u.metadata(), len(u.data), u.data, "Upload-Checksum", checksum("sha256", u.data))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST: status %d", resp.StatusCode)
		}
		if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
			t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
		}
		if !bytes.Equal(ts.storedBytes(u.id), u.data) {
			t.Fatal("stored bytes differ")
		}
	})
	t.Run("first chunk then PATCH", func(t *testing.T) {
		u := newUpload(9000)
		resp := ts.post(u.metadata(), len(u.data), u.data[:4000], "Upload-Checksum", checksum("sha1", u.data[:4000]))
		if resp.StatusCode != http.StatusCreated || offsetOf(t, resp) != 4000 {
			t.Fatalf("POST: status %d offset %q", resp.StatusCode, resp.Header.Get("Upload-Offset"))
		}
		resp = ts.sendChunks(resp.Header.Get("Location"), u, 4000, 4000, "sha256")
		if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
			t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
		}
	})
	t.Run("bad checksum", func(t *testing.T) {
		u := newUpload(3000)
		resp := ts.post(u.metadata(), len(u.data), u.data, "Upload-Checksum", checksum("sha256", u.data[1:]))
		if resp.StatusCode != StatusChecksumMismatch {
			t.Fatalf("POST with bad checksum: status %d, want 460", resp.StatusCode)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		u := newUpload(0)
		resp := ts.post(u.metadata(), 0, nil)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Courier-Sha256") != u.digest {
			t.Fatalf("empty POST: status %d Courier-Sha256 %q", resp.StatusCode, resp.Header.Get("Courier-Sha256"))
		}
	})
}

func TestPlainTusClient(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(70_000)
	resp := ts.post(encodeMeta(map[string]string{"filename": "x.bin"}), len(u.data), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: status %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	resp = ts.sendChunks(loc, u, 0, 30_000, "")
	if resp.Header.Get("Courier-Sha256") != "" {
		t.Fatal("Courier-Sha256 without sha256 metadata")
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	if !bytes.Equal(ts.storedBytes(id), u.data) {
		t.Fatal("stored bytes differ")
	}
	// No metadata at all.
	resp = ts.post("", 3, []byte("abc"))
	if resp.StatusCode != http.StatusCreated || offsetOf(t, resp) != 3 {
		t.Fatalf("POST without metadata: status %d", resp.StatusCode)
	}
}

func TestBadInput(t *testing.T) {
	ts := startServer(t, Options{MaxSize: 1 << 20, MaxChunkSize: 100_000})
	u := newUpload(1000)
	cases := []struct {
		name   string
		meta   string
		length int
		want   int
	}{
		{"metadata not base64", "courier-id %%%", 10, 400},
		{"metadata three fields", "a b c", 10, 400},
		{"courier-id not a uuid", u.metadata("courier-id", "../../etc/passwd"), 10, 400},
		{"courier-id upper case", u.metadata("courier-id", strings.ToUpper(u.id)), 10, 400},
		{"agent without courier-id", u.metadata("courier-id", "", "agent", "clinic-1"), 10, 400},
		{"sha256 not hex", u.metadata("sha256", "abc"), 10, 400},
		{"too large", u.metadata(), 2 << 20, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, ts.url, nil)
			req.Header.Set("Tus-Resumable", "1.0.0")
			req.Header.Set("Upload-Length", strconv.Itoa(c.length))
			req.Header.Set("Upload-Metadata", c.meta)
			resp, err := ts.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, c.want)
			}
			if len(body) == 0 {
				t.Fatal("no message saying what is wrong")
			}
		})
	}
	t.Run("oversized chunk", func(t *testing.T) {
		big := newUpload(200_000)
		loc := ts.create(big)
		req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(big.data))
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		req.Header.Set("Upload-Offset", "0")
		req.Header.Set("Upload-Checksum", checksum("sha256", big.data))
		resp, err := ts.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "ERR_CHUNK_TOO_LARGE") || !strings.Contains(string(body), "100000") {
			t.Fatalf("checksummed chunk over the cap: status %d %q, want 413 ERR_CHUNK_TOO_LARGE naming 100000", resp.StatusCode, body)
		}
		// Without Upload-Checksum the body streams: only the upload's length bounds it.
		if resp := ts.patch(loc, 0, big.data, ""); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("without checksum: status %d, want 204", resp.StatusCode)
		}
		small := newUpload(1000)
		if resp := ts.patch(ts.create(small), 0, big.data[:2000], ""); resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("beyond the upload's length: status %d, want 413", resp.StatusCode)
		}
	})
}

func TestExpiryRemovesAbandonedUploads(t *testing.T) {
	ts := startServer(t, Options{ExpireAfter: time.Hour})
	abandoned := newUpload(50_000)
	loc := ts.create(abandoned)
	ts.sendChunks(loc, upload{data: abandoned.data[:10_000]}, 0, 10_000, "sha256")
	done := newUpload(1000)
	ts.sendChunks(ts.create(done), done, 0, 1000, "sha256")

	// Nothing is old enough yet.
	if n, err := ts.srv.Expire(context.Background()); err != nil || n != 0 {
		t.Fatalf("Expire = %d, %v; want 0", n, err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, f := range []string{abandoned.id, abandoned.id + ".info", abandoned.id + stateSuffix, done.id, done.id + ".info", done.id + stateSuffix} {
		if err := os.Chtimes(filepath.Join(ts.dir, f), old, old); err != nil {
			t.Fatal(err)
		}
	}
	// An upload a request holds right now is left alone.
	lock, _ := ts.srv.locks.NewLock(abandoned.id)
	if err := lock.Lock(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	if n, err := ts.srv.Expire(context.Background()); err != nil || n != 0 {
		t.Fatalf("Expire while in use = %d, %v; want 0", n, err)
	}
	lock.Unlock()
	if n, err := ts.srv.Expire(context.Background()); err != nil || n != 1 {
		t.Fatalf("Expire = %d, %v; want 1", n, err)
	}
	for _, f := range []string{abandoned.id, abandoned.id + ".info", abandoned.id + stateSuffix} {
		if _, err := os.Stat(filepath.Join(ts.dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s still there after expiry (%v)", f, err)
		}
	}
	if !bytes.Equal(ts.storedBytes(done.id), done.data) {
		t.Fatal("a complete upload was expired")
	}
	if st := ts.head(loc).StatusCode; st != http.StatusNotFound {
		t.Fatalf("HEAD of expired upload: %d, want 404", st)
	}
}

func TestJanitorRuns(t *testing.T) {
	ts := startServer(t, Options{ExpireAfter: 300 * time.Millisecond})
	u := newUpload(1000)
	loc := ts.create(u)
	deadline := time.Now().Add(30 * time.Second)
	for ts.head(loc).StatusCode != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatal("janitor did not remove the abandoned upload within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(1000)
	ts.sendChunks(ts.create(u), u, 0, 1000, "sha256")
	resp, err := ts.c.Get(ts.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"courier_ingest_verified_total 1",
		`courier_ingest_checksum_mismatch_total{kind="chunk"} 0`,
		"courier_ingest_bytes_received_total 1000",
		"courier_ingest_auth_failures_total 0",
		"courier_ingest_digest_fallback_total 0",
		"tusd_uploads_finished 1",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	resp, err = ts.c.Get(ts.http.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestTerminationRemovesEverything(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(10_000)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:5000]}, 0, 5000, "sha256")
	req, _ := http.NewRequest(http.MethodDelete, loc, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	if st := ts.do(req).StatusCode; st != http.StatusNoContent {
		t.Fatalf("DELETE: %d, want 204", st)
	}
	entries, _ := os.ReadDir(ts.dir)
	if len(entries) != 0 {
		t.Fatalf("%d files left after termination", len(entries))
	}
}

func TestStoreURLs(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, c := range []struct {
		store, dir string
	}{
		{"", "var/objects"},
		{"file://./var/objects", "var/objects"},
		{"file://rel/dir", "rel/dir"},
	} {
		srv, err := New(context.Background(), Options{Store: c.store, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("%q: %v", c.store, err)
		}
		srv.Close()
		if fi, err := os.Stat(c.dir); err != nil || !fi.IsDir() {
			t.Errorf("%q: directory %s not made: %v", c.store, c.dir, err)
		}
	}
	abs := filepath.Join(t.TempDir(), "objects")
	srv, err := New(context.Background(), Options{Store: "file://" + abs, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := os.Stat(abs); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"ftp://x", "s3://", "file://"} {
		if _, err := New(context.Background(), Options{Store: bad, Logger: testLogger(t)}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNestedPathIsNotAnUpload(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(10)
	ts.create(u)
	if st := ts.head(ts.url + "x/" + u.id).StatusCode; st != http.StatusNotFound {
		t.Fatalf("HEAD of a nested path: %d, want 404", st)
	}
}

// A metadata header tusd would read differently (a tab, two spaces) is refused, so
// no upload is ever stored under a name other than its courier-id.
func TestMetadataTusdWouldMisread(t *testing.T) {
	ts := startServer(t, Options{})
	u := newUpload(10)
	for _, sep := range []string{"\t", "  "} {
		meta := "courier-id" + sep + base64.StdEncoding.EncodeToString([]byte(u.id))
		resp := ts.post(meta, len(u.data), nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("separator %q: status %d, want 400", sep, resp.StatusCode)
		}
	}
}
