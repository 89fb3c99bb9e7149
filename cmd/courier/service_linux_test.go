package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/packaging"
)

// Without systemd (this container, a SysV box) `courier service` refuses with
// exit 1 and says why, instead of writing init scripts.
func TestServiceWithoutSystemdRefuses(t *testing.T) {
	if fi, err := os.Stat(systemdRunning); err == nil && fi.IsDir() {
		t.Skip("systemd runs here; this test is for machines without it")
	}
	for _, action := range []string{"install", "uninstall", "start", "stop", "status"} {
		var stdout, stderr bytes.Buffer
		code := run([]string{"service", action, "--config", "/nonexistent.yaml"}, &stdout, &stderr)
		if code != 1 {
			t.Errorf("service %s: exit %d, want 1 (stderr %q)", action, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "systemd is not running") || !strings.Contains(stderr.String(), "no SysV init scripts") {
			t.Errorf("service %s: message %q does not say why", action, stderr.String())
		}
	}
	for _, f := range []string{"/etc/init.d/courier", "/etc/systemd/system/courier.service"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s exists after the refused commands", f)
		}
	}
}

func TestServiceUnknownAction(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"service", "restart"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
}

func TestRenderUnitIsThePackagedOne(t *testing.T) {
	u := renderUnit("/opt/courier bin/courier", "/etc/clinic/courier.yaml", true)
	for _, want := range []string{
		unitHeader, unitUserCreated,
		"\nExecStartPre=\"/opt/courier bin/courier\" config validate /etc/clinic/courier.yaml\n",
		"\nExecStart=\"/opt/courier bin/courier\" run --config /etc/clinic/courier.yaml\n",
		"\nUser=courier\n", "\nStateDirectory=courier\n", "\nProtectSystem=strict\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q:\n%s", want, u)
		}
	}
	if strings.Contains(u, packaging.UnitBinary+" ") || strings.Contains(u, packaging.UnitConfig) {
		t.Errorf("unit still names the packaged paths:\n%s", u)
	}
	// Apart from the two paths and the header, it is the packaged unit.
	back := strings.NewReplacer("\"/opt/courier bin/courier\"", packaging.UnitBinary, "/etc/clinic/courier.yaml", packaging.UnitConfig).
		Replace(strings.TrimPrefix(u, unitHeader+unitUserCreated))
	if back != packaging.CourierUnit {
		t.Errorf("rendered unit differs from packaging/systemd/courier.service beyond the paths")
	}
	if u := renderUnit("/usr/bin/courier", "/etc/courier/courier.yaml", false); strings.Contains(u, unitUserCreated) {
		t.Errorf("user marker without a created user")
	}
}

func TestDropInPaths(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"lab out", "sent", "scans", "data"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	cfgFile := filepath.Join(dir, "courier.yaml")
	yaml := "agent:\n  data_dir: " + filepath.Join(dir, "data") + "\n" +
		"upload:\n  endpoint: https://ingest.example.org/files/\n" +
		"sources:\n" +
		"  - {name: lab, kind: folder, path: \"" + filepath.Join(dir, "lab out") + "\", after: \"move:" + filepath.Join(dir, "sent") + "\"}\n" +
		"  - {name: scans, kind: folder, path: " + filepath.Join(dir, "scans") + ", after: delete}\n" +
		"events:\n  file: /var/lib/courier/events.jsonl\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	got := writablePaths(cfg, "/var/lib/courier")
	want := []string{filepath.Join(dir, "data"), filepath.Join(dir, "lab out"), filepath.Join(dir, "scans"), filepath.Join(dir, "sent")}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("writable paths = %q, want %q (events under the state dir need none)", got, want)
	}
	d := renderDropIn(cfgFile, got)
	for _, w := range []string{"[Service]\n", "ReadWritePaths=\"" + filepath.Join(dir, "lab out") + "\"\n", "ReadWritePaths=" + filepath.Join(dir, "sent") + "\n"} {
		if !strings.Contains(d, w) {
			t.Errorf("drop-in lacks %q:\n%s", w, d)
		}
	}
	if renderDropIn(cfgFile, nil) != "" {
		t.Errorf("a config with nothing outside the state dir needs no drop-in")
	}
}
