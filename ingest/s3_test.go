package ingest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/edgecourier/courier/internal/versitygwtest"
)

func startS3(t *testing.T) *versitygwtest.Server {
	t.Helper()
	gw := versitygwtest.Start(t)
	for _, kv := range gw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return gw
}

func startS3Bench(b *testing.B) *versitygwtest.Server {
	b.Helper()
	gw := versitygwtest.Start(b)
	for _, kv := range gw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		b.Setenv(k, v)
	}
	return gw
}

func bucketKeys(t *testing.T, gw *versitygwtest.Server) []string {
	t.Helper()
	out, err := gw.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatalf("list bucket: %v", err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	sort.Strings(keys)
	return keys
}

func objectBytes(t *testing.T, gw *versitygwtest.Server, key string) []byte {
	t.Helper()
	out, err := gw.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get object %s: %v", key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func multipartUploads(t *testing.T, gw *versitygwtest.Server) int {
	t.Helper()
	out, err := gw.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	return len(out.Uploads)
}

func TestS3SeveralSizes(t *testing.T) {
	gw := startS3(t)
	ts := startServer(t, Options{Store: gw.StoreURL()})
	sizes := []struct {
		size, chunk int
	}{
		{0, 1}, {1, 1}, {100_000, 30_000}, {5<<20 + 1, 2 << 20}, {12<<20 + 3, 6 << 20},
	}
	for _, c := range sizes {
		u := newUpload(c.size)
		var resp *http.Response
		if c.size == 0 {
			resp = ts.post(u.metadata(), 0, nil)
		} else {
			resp = ts.sendChunks(ts.create(u), u, 0, c.chunk, "sha256")
		}
		if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
			t.Fatalf("size %d: Courier-Sha256 = %q, want %s", c.size, got, u.digest)
		}
		if !bytes.Equal(objectBytes(t, gw, u.id), u.data) {
			t.Fatalf("size %d: object %s in the bucket differs", c.size, u.id)
		}
		// A second POST finds it and answers verified.
		resp = ts.post(u.metadata(), c.size, nil)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Courier-Sha256") != u.digest {
			t.Fatalf("size %d: second POST status %d Courier-Sha256 %q", c.size, resp.StatusCode, resp.Header.Get("Courier-Sha256"))
		}
		// Verified objects are write-once in the bucket too.
		req, _ := http.NewRequest(http.MethodDelete, resp.Header.Get("Location"), nil)
		req.Header.Set("Tus-Resumable", "1.0.0")
		if st := ts.do(req).StatusCode; st != http.StatusForbidden {
			t.Fatalf("size %d: DELETE of the verified upload: %d, want 403", c.size, st)
		}
		if !bytes.Equal(objectBytes(t, gw, u.id), u.data) {
			t.Fatalf("size %d: object changed after the refused DELETE", c.size)
		}
	}
	if n := counter(t, ts.srv, "fallback"); n != 0 {
		t.Errorf("digest fallbacks = %v, want 0", n)
	}
	if n := multipartUploads(t, gw); n != 0 {
		t.Errorf("%d multipart uploads left open", n)
	}
	for _, k := range bucketKeys(t, gw) {
		if strings.HasSuffix(k, ".part") {
			t.Errorf("leftover %s", k)
		}
	}
}

func TestS3RestartAndWrongDigest(t *testing.T) {
	gw := startS3(t)
	ts := startServer(t, Options{Store: gw.StoreURL()})
	u := newUpload(7<<20 + 5)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:3<<20]}, 0, 1<<20, "sha256")
	ts.close()

	ts2 := startServer(t, Options{Store: gw.StoreURL()})
	loc2 := ts2.url + loc[strings.LastIndex(loc, "/")+1:]
	off := offsetOf(t, ts2.head(loc2))
	if off != 3<<20 {
		t.Fatalf("offset after restart = %d, want %d", off, 3<<20)
	}
	resp := ts2.sendChunks(loc2, u, off, 2<<20, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
	}
	if n := counter(t, ts2.srv, "fallback"); n != 0 {
		t.Fatalf("digest fallbacks = %v, want 0", n)
	}

	// A wrong whole-file digest discards the object.
	bad := newUpload(6 << 20)
	resp = ts2.post(bad.metadata("sha256", u.digest), len(bad.data), nil)
	bloc := resp.Header.Get("Location")
	ts2.sendChunks(bloc, upload{data: bad.data[:5<<20]}, 0, 5<<20, "sha256")
	if resp := ts2.patch(bloc, 5<<20, bad.data[5<<20:], checksum("sha256", bad.data[5<<20:])); resp.StatusCode != StatusChecksumMismatch {
		t.Fatalf("wrong file digest: status %d, want 460", resp.StatusCode)
	}
	for _, k := range bucketKeys(t, gw) {
		if strings.HasPrefix(k, bad.id) {
			t.Errorf("%s left after a file mismatch", k)
		}
	}
}

func TestS3Expiry(t *testing.T) {
	gw := startS3(t)
	ts := startServer(t, Options{Store: gw.StoreURL(), ExpireAfter: -1})
	done := newUpload(1000)
	ts.sendChunks(ts.create(done), done, 0, 1000, "sha256")
	abandoned := newUpload(8 << 20)
	loc := ts.create(abandoned)
	ts.sendChunks(loc, upload{data: abandoned.data[:6<<20]}, 0, 6<<20, "sha256")
	if multipartUploads(t, gw) != 1 {
		t.Fatalf("want one open multipart upload before expiry")
	}
	ts.close()

	// An ingest with a short expiry finds it abandoned.
	ts2 := startServer(t, Options{Store: gw.StoreURL(), ExpireAfter: 2 * time.Second})
	deadline := time.Now().Add(60 * time.Second)
	for multipartUploads(t, gw) != 0 || len(bucketKeysWithPrefix(t, gw, abandoned.id)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("abandoned upload not removed within 60s: %v", bucketKeys(t, gw))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := ts2.head(ts2.url + loc[strings.LastIndex(loc, "/")+1:]).StatusCode; st != http.StatusNotFound {
		t.Fatalf("HEAD of expired upload: %d, want 404", st)
	}
	if !bytes.Equal(objectBytes(t, gw, done.id), done.data) {
		t.Fatal("complete object was expired")
	}
	if n := counter(t, ts2.srv, "expired"); n != 1 {
		t.Fatalf("expired = %v, want 1", n)
	}
}

func bucketKeysWithPrefix(t *testing.T, gw *versitygwtest.Server, prefix string) []string {
	var out []string
	for _, k := range bucketKeys(t, gw) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

func TestS3BinarySurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	gw := versitygwtest.Start(t)
	p := startIngest(t, gw.Env(), "--store", gw.StoreURL())
	cl := p.client(nil)
	cl.t = t
	u := newUpload(11<<20 + 9)
	loc := cl.create(u)
	cl.sendChunks(loc, upload{data: u.data[:6<<20]}, 0, 3<<20, "sha256")
	p.kill(t)

	p2 := startIngest(t, gw.Env(), "--store", gw.StoreURL())
	cl2 := p2.client(nil)
	cl2.t = t
	// The agent resumes at its stored URL (same path on the new process).
	loc2 := cl2.url + loc[strings.LastIndex(loc, "/")+1:]
	off := offsetOf(t, cl2.head(loc2))
	if off != 6<<20 {
		t.Fatalf("offset after SIGKILL = %d, want %d", off, 6<<20)
	}
	resp := cl2.sendChunks(loc2, u, off, 3<<20, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s\n%s", got, u.digest, p2.logs())
	}
	if got := cl2.head(loc2).Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("HEAD Courier-Sha256 = %q", got)
	}
	if n := scrape(t, cl2.c, p2.base, "courier_ingest_digest_fallback_total"); n != 0 {
		t.Fatalf("digest fallbacks = %v, want 0", n)
	}
	if !bytes.Equal(objectBytes(t, gw, u.id), u.data) {
		t.Fatal("object in the bucket differs")
	}
	objects := 0
	for _, k := range bucketKeys(t, gw) {
		if !strings.Contains(k, ".") {
			objects++
		}
	}
	if objects != 1 {
		t.Fatalf("%d objects in the bucket, want 1: %v", objects, bucketKeys(t, gw))
	}
}

func TestS3LostStateFallsBack(t *testing.T) {
	gw := startS3(t)
	ts := startServer(t, Options{Store: gw.StoreURL()})
	u := newUpload(6<<20 + 100)
	loc := ts.create(u)
	ts.sendChunks(loc, upload{data: u.data[:1<<20]}, 0, 1<<20, "sha256")
	ts.close()
	if _, err := gw.Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{
		Bucket: aws.String(gw.Bucket), Key: aws.String(u.id + stateSuffix)}); err != nil {
		t.Fatal(err)
	}
	ts2 := startServer(t, Options{Store: gw.StoreURL()})
	resp := ts2.sendChunks(ts2.url+loc[strings.LastIndex(loc, "/")+1:], u, 1<<20, 2<<20, "sha256")
	if got := resp.Header.Get("Courier-Sha256"); got != u.digest {
		t.Fatalf("Courier-Sha256 = %q, want %s", got, u.digest)
	}
	if n := counter(t, ts2.srv, "fallback"); n != 1 {
		t.Fatalf("digest fallbacks = %v, want 1", n)
	}
}
