package mosquittotest_test

import (
	"net"
	"os/exec"
	"testing"

	"github.com/edgecourier/courier/internal/mosquittotest"
)

func TestStartRestartKill(t *testing.T) {
	b := mosquittotest.Start(t)
	pub := func() error {
		return exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port(t, b), "-t", "x/y", "-m", "hi", "-r", "-q", "1").Run()
	}
	if err := pub(); err != nil {
		t.Fatalf("publish: %v\n%s", err, b.Log())
	}
	b.Restart()
	out, err := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", port(t, b), "-t", "x/y", "-C", "1", "-W", "10").Output()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("retained message after restart: %q, %v\n%s", out, err, b.Log())
	}
	b.Kill()
	if b.Running() {
		t.Fatal("still running after Kill")
	}
}

func TestUserAndTLS(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.WithUser("dev", "s3cret"), mosquittotest.WithTLS(true))
	crt, key := b.ClientCert(t, "client")
	args := []string{"-h", "127.0.0.1", "-p", port(t, b), "--cafile", b.CAFile, "--cert", crt, "--key", key, "-t", "a", "-m", "x", "-q", "1"}
	if out, err := exec.Command("mosquitto_pub", append(args, "-u", "dev", "-P", "s3cret")...).CombinedOutput(); err != nil {
		t.Fatalf("publish with user and client cert: %v: %s\n%s", err, out, b.Log())
	}
	if err := exec.Command("mosquitto_pub", append(args, "-u", "dev", "-P", "wrong")...).Run(); err == nil {
		t.Fatal("wrong password accepted")
	}
}

func port(t *testing.T, b *mosquittotest.Broker) string {
	_, p, err := net.SplitHostPort(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
