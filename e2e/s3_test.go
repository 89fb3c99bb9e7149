package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/edgecourier/courier/internal/testutil"
	"github.com/edgecourier/courier/internal/versitygwtest"
)

// TestS3WithTokenSurvivesIngestRestart is issue 3's promise from the outside: an
// agent uploads with its token through courier-ingest to a real S3-compatible
// server; courier-ingest is SIGKILLed mid-upload and restarted; the agent
// finishes, the digest is confirmed, one object under the file id. A stranger
// gets 401, another agent's token 403.
func TestS3WithTokenSurvivesIngestRestart(t *testing.T) {
	skipOnWindows(t)
	s3srv := versitygwtest.Start(t)
	root := t.TempDir()
	tokens := filepath.Join(root, "tokens")
	writeText(t, tokens, "e2e-agent s3cret-e2e\nother-agent s3cret-other\n")
	addr := testutil.FreePort(t)
	startS3Ingest := func() *proc {
		p := startEnv(t, "courier-ingest (s3)", s3srv.Env(), bin.ingest, "--listen", addr, "--store", s3srv.StoreURL(), "--tokens", tokens)
		waitListening(t, addr)
		return p
	}
	ingestProc := startS3Ingest()
	px := startProxy(t, "http://"+addr)

	// Strangers first.
	if code := post(t, "http://"+addr+"/files/", "", "e2e-agent"); code != http.StatusUnauthorized {
		t.Errorf("POST without a token: %d, want 401", code)
	}
	if code := post(t, "http://"+addr+"/files/", "s3cret-other", "e2e-agent"); code != http.StatusForbidden {
		t.Errorf("POST as e2e-agent with other-agent's token: %d, want 403", code)
	}

	const size = 12 << 20
	e := newEnv(t, agentConf{Endpoint: px.url(), Chunk: "1MiB", Bandwidth: "2MiB"})
	tok := filepath.Join(e.root, "token")
	writeText(t, tok, "s3cret-e2e\n")
	os.Chmod(tok, 0o600) // a token readable by others is refused (upload.bearer_token_file)
	cfg := strings.Replace(string(mustRead(t, e.cfgPath)), "upload:\n", "upload:\n  bearer_token_file: "+tok+"\n", 1)
	writeText(t, e.cfgPath, cfg)
	body := randBytes(size, 33)
	writeFile(t, filepath.Join(e.inbox, "ct-scan.bin"), body)
	e.startAgent()

	testutil.WaitFor(t, 2*time.Minute, "a third of the file through the proxy", func() bool { return px.patchBytes.Load() > size/3 })
	ingestProc.kill()
	time.Sleep(time.Second) // the agent meets a dead server and backs off
	startS3Ingest()

	ev := e.waitVerified(1, 3*time.Minute)[sum(body)]
	if ev.ID == "" {
		t.Fatal("no verified event")
	}
	cl := s3srv.Client()
	ctx := context.Background()
	obj, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: &s3srv.Bucket, Key: &ev.Data.FileID})
	if err != nil {
		t.Fatalf("object %s in the bucket: %v", ev.Data.FileID, err)
	}
	stored, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if !bytes.Equal(stored, body) {
		t.Fatalf("bytes in the bucket differ from the source (%d vs %d)", len(stored), len(body))
	}
	assertOneEventPerFile(t, e, body)
	list, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &s3srv.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range list.Contents {
		if !strings.Contains(*o.Key, ".") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("bucket holds %d objects, want 1", n)
	}
}

// post makes a tus creation request as agent with a bearer token ("" = none).
func post(t *testing.T, url, token, agent string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "3")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	req.Header.Set("Upload-Metadata", "courier-id "+b64("01a21473-0000-7000-8000-000000000001")+",agent "+b64(agent))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestMutualTLS: the agent proves who it is with a client certificate; one
// issued to another agent is refused (403) and the agent pauses instead of
// quarantining anything.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	srvCert, srvKey := ca.issue(t, dir, "server", true)
	goodCert, goodKey := ca.issue(t, dir, "e2e-agent", false)
	badCert, badKey := ca.issue(t, dir, "other-agent", false)
	caFile := filepath.Join(dir, "ca.pem")
	writeText(t, caFile, string(ca.pem))
	addr := testutil.FreePort(t)
	store := t.TempDir()
	start(t, "courier-ingest (mtls)", bin.ingest, "--listen", addr, "--store", "file://"+store,
		"--tls-cert", srvCert, "--tls-key", srvKey, "--client-ca", caFile)
	waitListening(t, addr)
	run := func(cert, key string) *env {
		e := newEnv(t, agentConf{Endpoint: "https://" + addr + "/files/"})
		cfg := strings.Replace(string(mustRead(t, e.cfgPath)), "upload:\n",
			fmt.Sprintf("upload:\n  tls: { ca_file: %s, client_cert: %s, client_key: %s }\n", caFile, cert, key), 1)
		writeText(t, e.cfgPath, cfg)
		e.startAgent()
		return e
	}
	good := run(goodCert, goodKey)
	body := []byte("%PDF-1.4\nover mutual TLS\n")
	writeFile(t, filepath.Join(good.inbox, "a.pdf"), body)
	ev := good.waitVerified(1, time.Minute)[sum(body)]
	if b, err := os.ReadFile(filepath.Join(store, ev.Data.FileID)); err != nil || !bytes.Equal(b, body) {
		t.Fatalf("object over mTLS: %v", err)
	}

	bad := run(badCert, badKey)
	writeFile(t, filepath.Join(bad.inbox, "b.pdf"), []byte("%PDF-1.4\nwrong certificate\n"))
	testutil.WaitFor(t, time.Minute, "the agent with another agent's certificate to report uploads paused", func() bool {
		out, _ := bad.courier("status", "--config", bad.cfgPath, "--json")
		return strings.Contains(out, `"state": "paused"`)
	})
	out, _ := bad.courier("spool", "ls", "--config", bad.cfgPath, "--state", "quarantined", "--json")
	if strings.Contains(out, `"id"`) {
		t.Errorf("a refused certificate quarantined a file; it must only pause:\n%s", out)
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, dir, cn string, server bool) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	writeText(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeText(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	return certFile, keyFile
}
