package ingest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeTokens(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTokens(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokFile, "# agents\nclinic-1 secret-one\n\nclinic-2 secret-two\n")
	ts := startServer(t, Options{Tokens: tokFile, MaxSize: 1 << 20})
	u := newUpload(50_000)
	meta := u.metadata("agent", "clinic-1")

	resp := ts.post(meta, len(u.data), nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: status %d WWW-Authenticate %q, want 401 Bearer", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp := ts.post(meta, len(u.data), nil, "Authorization", "Bearer secret-three"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown token: status %d, want 401", resp.StatusCode)
	}
	if resp := ts.post(meta, len(u.data), nil, "Authorization", "Bearer secret-two"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("clinic-2's token uploading as clinic-1: status %d, want 403", resp.StatusCode)
	}
	if resp := ts.post(u.metadata("agent", "clinic-1"), 2<<20, nil, "Authorization", "Bearer secret-one"); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("over --max-size: status %d, want 413", resp.StatusCode)
	}

	ts.tok = "secret-one"
	resp = ts.post(meta, len(u.data), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("clinic-1: status %d, want 201", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	ts.sendChunks(loc, upload{data: u.data[:20_000]}, 0, 20_000, "sha256")

	// Another agent may not touch it, nor learn that it exists: 404, as for a
	// missing upload (TestUnknownUploadIs404 compares the two answers).
	other := &testServer{t: t, c: ts.c, url: ts.url, tok: "secret-two"}
	if st := other.patch(loc, 20_000, u.data[20_000:], checksum("sha256", u.data[20_000:])).StatusCode; st != http.StatusNotFound {
		t.Fatalf("clinic-2 PATCHing clinic-1's upload: %d, want 404", st)
	}
	if st := other.head(loc).StatusCode; st != http.StatusNotFound {
		t.Fatalf("clinic-2 HEAD of clinic-1's upload: %d, want 404", st)
	}
	resp = ts.sendChunks(loc, u, 20_000, 20_000, "sha256")
	if resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("clinic-1's upload not verified")
	}

	// clinic-2 cannot learn about clinic-1's upload by posting its courier-id.
	if st := other.post(u.metadata("agent", "clinic-2"), len(u.data), nil).StatusCode; st != http.StatusForbidden {
		t.Fatalf("clinic-2 POSTing clinic-1's courier-id: %d, want 403", st)
	}

	if n := counter(t, ts.srv, "auth"); n != 6 {
		t.Errorf("auth failures = %v, want 6", n)
	}

	// Re-reading the file: clinic-1's token is rotated.
	writeTokens(t, tokFile, "clinic-1 secret-new\nclinic-2 secret-two\n")
	if err := ts.srv.ReloadTokens(); err != nil {
		t.Fatal(err)
	}
	if st := ts.head(loc).StatusCode; st != http.StatusUnauthorized {
		t.Fatalf("old token after reload: %d, want 401", st)
	}
	ts.tok = "secret-new"
	if st := ts.head(loc).StatusCode; st != http.StatusOK {
		t.Fatalf("new token after reload: %d, want 200", st)
	}
	// A broken file keeps the tokens in force.
	writeTokens(t, tokFile, "clinic-1\n")
	if err := ts.srv.ReloadTokens(); err == nil {
		t.Fatal("broken tokens file accepted")
	}
	if st := ts.head(loc).StatusCode; st != http.StatusOK {
		t.Fatalf("after a failed reload: %d, want 200", st)
	}
}

// pki is an in-test CA with server and client certificates.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  string // path
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	p.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "courier test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caPEM = filepath.Join(p.dir, "ca.pem")
	writePEM(t, p.caPEM, "CERTIFICATE", der)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.server = p.issue(t, "127.0.0.1", true)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

var serial int64 = 10

func (p *pki) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, filepath.Join(p.dir, cn+".pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(p.dir, cn+".key"), "EC PRIVATE KEY", keyDER)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *pki) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: p.pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func TestClientCertificatesOverS3(t *testing.T) {
	gw := startS3(t)
	p := newPKI(t)
	srv, err := New(t.Context(), Options{Store: gw.StoreURL(), ClientCA: p.caPEM, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}}
	srv.ConfigureTLS(hs.TLS)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the rogue certificate's handshake error
	hs.StartTLS()
	defer hs.Close()

	c1 := p.issue(t, "clinic-1", false)
	c2 := p.issue(t, "clinic-2", false)
	as := func(c *http.Client) *testServer {
		return &testServer{t: t, c: c, url: hs.URL + "/files/"}
	}
	u := newUpload(6<<20 + 1)
	meta := u.metadata("agent", "clinic-1")

	if st := as(p.client(nil)).post(meta, len(u.data), nil).StatusCode; st != http.StatusUnauthorized {
		t.Fatalf("no certificate: %d, want 401", st)
	}
	if st := as(p.client(&c2)).post(meta, len(u.data), nil).StatusCode; st != http.StatusForbidden {
		t.Fatalf("clinic-2's certificate uploading as clinic-1: %d, want 403", st)
	}
	rogue := newPKI(t)
	rc := rogue.issue(t, "clinic-1", false)
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/files/", nil)
	if resp, err := p.client(&rc).Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("certificate from another CA: %d, want refusal", resp.StatusCode)
		}
	}

	cl := as(p.client(&c1))
	resp := cl.post(meta, len(u.data), nil)
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Fatalf("clinic-1: status %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = cl.sendChunks(resp.Header.Get("Location"), u, 0, 4<<20, "sha256")
	if resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatal("not verified")
	}
	if string(objectBytes(t, gw, u.id)) != string(u.data) {
		t.Fatal("object differs")
	}
}

func TestBinaryTLSAndTokenReload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := newPKI(t)
	c1 := p.issue(t, "clinic-1", false)
	tokFile := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokFile, "clinic-2 tok-two\n")
	proc := startIngest(t, nil, "--store", "file://"+t.TempDir(),
		"--tls-cert", filepath.Join(p.dir, "127.0.0.1.pem"), "--tls-key", filepath.Join(p.dir, "127.0.0.1.key"),
		"--client-ca", p.caPEM, "--tokens", tokFile)
	if !strings.HasPrefix(proc.base, "https://") {
		t.Fatalf("base %s is not https", proc.base)
	}
	// clinic-1 by certificate.
	cl := proc.client(p.client(&c1))
	cl.t = t
	u := newUpload(30_000)
	resp := cl.post(u.metadata("agent", "clinic-1"), len(u.data), u.data, "Upload-Checksum", checksum("sha256", u.data))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Courier-Sha256") != u.digest {
		t.Fatalf("clinic-1 by certificate: status %d Courier-Sha256 %q", resp.StatusCode, resp.Header.Get("Courier-Sha256"))
	}
	// clinic-2 by token, rotated with SIGHUP.
	tc := proc.client(p.client(nil))
	tc.t = t
	tc.tok = "tok-two"
	u2 := newUpload(10)
	if st := tc.post(u2.metadata("agent", "clinic-2"), 10, nil).StatusCode; st != http.StatusCreated {
		t.Fatalf("clinic-2 by token: %d", st)
	}
	writeTokens(t, tokFile, "clinic-2 tok-rotated\n")
	if err := proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for tc.post(newUpload(10).metadata("agent", "clinic-2"), 10, nil).StatusCode != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("old token still accepted 30s after SIGHUP")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tc.tok = "tok-rotated"
	if st := tc.post(newUpload(10).metadata("agent", "clinic-2"), 10, nil).StatusCode; st != http.StatusCreated {
		t.Fatalf("rotated token: %d", st)
	}
}
