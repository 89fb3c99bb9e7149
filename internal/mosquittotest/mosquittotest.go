// Package mosquittotest runs a real Mosquitto broker for tests: one process per
// test, on a free loopback port, with a generated config and persistence in the
// test's temp dir. It never talks to anything but 127.0.0.1.
//
// Without the mosquitto binary a test is skipped, unless CI is set, where it fails:
// CI must install it (apt-get install mosquitto mosquitto-clients).
package mosquittotest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Option changes the broker's config.
type Option func(*config)

type config struct {
	users      map[string]string
	tls        bool
	requireCrt bool
	extra      []string
}

// WithUser turns anonymous access off and adds a user to a password file.
func WithUser(name, password string) Option {
	return func(c *config) {
		if c.users == nil {
			c.users = map[string]string{}
		}
		c.users[name] = password
	}
}

// WithTLS makes the listener TLS-only with a generated CA and server certificate for
// 127.0.0.1; requireClientCert also demands a client certificate signed by that CA
// (Broker.ClientCert makes one).
func WithTLS(requireClientCert bool) Option {
	return func(c *config) { c.tls, c.requireCrt = true, requireClientCert }
}

// WithConfig appends raw lines to mosquitto.conf (e.g. "max_inflight_messages 5").
func WithConfig(lines ...string) Option {
	return func(c *config) { c.extra = append(c.extra, lines...) }
}

// Broker is a running Mosquitto.
type Broker struct {
	t    testing.TB
	dir  string
	conf string
	port int
	tls  bool

	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
	CAFile string // PEM of the generated CA (WithTLS)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// Start runs a broker for the test and stops it at cleanup.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)")
		}
		t.Fatalf("mosquitto not installed but CI=%s: install it (apt-get install mosquitto mosquitto-clients)", os.Getenv("CI"))
	}
	var c config
	for _, o := range opts {
		o(&c)
	}
	b := &Broker{t: t, dir: t.TempDir(), port: freePort(t), tls: c.tls}
	lines := []string{
		fmt.Sprintf("listener %d 127.0.0.1", b.port),
		"persistence true",
		"persistence_location " + filepath.Join(b.dir, "data") + "/",
		"autosave_interval 1",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
	}
	if err := os.MkdirAll(filepath.Join(b.dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// As root Mosquitto switches to the "mosquitto" user, which cannot read the
		// test's temp dir; tell it to stay root.
		lines = append(lines, "user root")
	}
	if len(c.users) > 0 {
		pw := filepath.Join(b.dir, "passwd")
		for name, pass := range c.users {
			args := []string{"-b", pw, name, pass}
			if _, err := os.Stat(pw); err != nil {
				args = append([]string{"-c"}, args...)
			}
			if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v: %s", err, out)
			}
		}
		lines = append(lines, "allow_anonymous false", "password_file "+pw)
	} else {
		lines = append(lines, "allow_anonymous true")
	}
	if c.tls {
		b.makeCA(t)
		crt, key := b.issue(t, "server", true)
		lines = append(lines, "cafile "+b.CAFile, "certfile "+crt, "keyfile "+key, "tls_version tlsv1.2")
		if c.requireCrt {
			lines = append(lines, "require_certificate true")
		}
	}
	lines = append(lines, c.extra...)
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start(bin)
	t.Cleanup(b.Stop)
	return b
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (b *Broker) start(bin string) {
	b.t.Helper()
	log := &syncBuffer{}
	cmd := exec.Command(bin, "-c", b.conf)
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.mu.Lock()
	b.cmd, b.done, b.log = cmd, done, log
	b.mu.Unlock()
	// Wait until it accepts connections (a restart may wait for the port to free up).
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b.t.Fatalf("mosquitto exited at start: %s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto did not listen on %s: %v\n%s", b.Addr(), err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Addr is host:port.
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// URL is tcp://127.0.0.1:PORT (ssl:// with WithTLS).
func (b *Broker) URL() string {
	if b.tls {
		return "ssl://" + b.Addr()
	}
	return "tcp://" + b.Addr()
}

// Log is what the broker wrote so far.
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// Stop ends the broker gracefully (SIGTERM: it saves its persistence file).
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// Kill ends the broker with SIGKILL (only what autosave wrote survives; autosave runs
// every second).
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

func (b *Broker) signal(sig syscall.Signal) {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops the broker gracefully and starts it again on the same port with the
// same persistence, so sessions and queued messages survive.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	bin := "mosquitto"
	if p, err := exec.LookPath("mosquitto"); err == nil {
		bin = p
	} else if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		bin = "/usr/sbin/mosquitto"
	}
	b.start(bin)
}

// Running reports whether the broker process is up.
func (b *Broker) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd != nil
}

func (b *Broker) makeCA(t testing.TB) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mosquittotest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	b.caKey = key
	b.caCert, _ = x509.ParseCertificate(der)
	b.CAFile = filepath.Join(b.dir, "ca.pem")
	writePEM(t, b.CAFile, "CERTIFICATE", der)
}

var serial int64 = 1
var serialMu sync.Mutex

// issue makes a certificate signed by the test CA and returns its cert and key files.
func (b *Broker) issue(t testing.TB, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serialMu.Lock()
	serial++
	sn := serial
	serialMu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.caCert, &key.PublicKey, b.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(b.dir, name+".crt")
	keyFile = filepath.Join(b.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kd)
	return certFile, keyFile
}

// ClientCert issues a client certificate signed by the broker's CA (WithTLS).
func (b *Broker) ClientCert(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	if b.caKey == nil {
		t.Fatal("mosquittotest: ClientCert needs WithTLS")
	}
	return b.issue(t, name, false)
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
