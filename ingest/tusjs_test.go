package ingest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// tusJSScript uploads a file with tus-js-client's default options: one PATCH
// for the whole file, no Upload-Checksum (what Uppy does too).
const tusJSScript = `
const tus = require('tus-js-client');
const fs = require('fs');
const [endpoint, path, cid, sha] = process.argv.slice(2);
let verified = '';
const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  metadata: { 'courier-id': cid, sha256: sha, filetype: 'application/octet-stream' },
  onAfterResponse(req, res) { const d = res.getHeader('Courier-Sha256'); if (d) verified = d; },
  onError(err) { console.error('upload failed: ' + err); process.exit(1); },
  onSuccess() { console.log(JSON.stringify({ url: upload.url, verified })); },
});
upload.start();
`

// npmInstall installs pkg into a temporary directory and returns it; without
// node/npm or the registry the test is skipped (failed under CI).
func npmInstall(t *testing.T, pkg string) string {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("%s not installed (make test-deps installs nodejs and npm): %v", tool, err)
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error", pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		skip("npm install %s: %v\n%s", pkg, err, out)
	}
	return dir
}

// A plain tus client with default options sends a 200 MiB file in one PATCH
// without Upload-Checksum: it streams into the store (no chunk cap but the
// upload's length) and is verified.
func TestTusJSClientDefaultsUploadLargeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: installs tus-js-client and uploads 200 MiB")
	}
	const size = 200 << 20
	js := npmInstall(t, "tus-js-client@4")
	ts := startServer(t, Options{})

	path := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8([32]byte{200}), size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	digest := hex.EncodeToString(h.Sum(nil))
	id, _ := uuid.NewV7()

	script := filepath.Join(js, "upload.js")
	if err := os.WriteFile(script, []byte(tusJSScript), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script, ts.url, path, id.String(), digest)
	cmd.Dir = js
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("tus-js-client: %v\n%s%s", err, out, stderr)
	}
	var res struct{ URL, Verified string }
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &res); err != nil {
		t.Fatalf("tus-js-client output %q: %v", out, err)
	}
	if !strings.HasSuffix(res.URL, "/files/"+id.String()) || res.Verified != digest {
		t.Fatalf("tus-js-client: url %q Courier-Sha256 %q, want .../files/%s and %s", res.URL, res.Verified, id, digest)
	}
	stored, err := os.Open(filepath.Join(ts.dir, id.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer stored.Close()
	sh := sha256.New()
	n, err := io.Copy(sh, stored)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || hex.EncodeToString(sh.Sum(nil)) != digest {
		t.Fatalf("stored %d bytes with sha256 %x, want %d bytes with %s", n, sh.Sum(nil), size, digest)
	}
	if got := counter(t, ts.srv, "verified"); got != 1 {
		t.Errorf("verified = %v, want 1", got)
	}
}
