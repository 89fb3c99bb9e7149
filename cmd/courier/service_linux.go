package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/edgecourier/courier/agent/config"
)

// systemdRunning is where sd_booted(3) looks: systemd is the init system.
const systemdRunning = "/run/systemd/system"

// systemdManager drives systemd through systemctl.
type systemdManager struct {
	systemctl string
	unitDir   string
}

func newServiceManager() (serviceManager, error) {
	if fi, err := os.Stat(systemdRunning); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: systemd is not running on this machine (%s is missing), and courier writes no SysV init scripts; run `courier run --config FILE` under the supervisor you use", errNoServiceManager, systemdRunning)
	}
	sc, err := exec.LookPath("systemctl")
	if err != nil {
		return nil, fmt.Errorf("%w: systemd runs but systemctl is not on PATH: %v", errNoServiceManager, err)
	}
	return &systemdManager{systemctl: sc, unitDir: systemdUnitDir}, nil
}

func (m *systemdManager) Name() string { return "systemd" }

func (m *systemdManager) unitPath() string { return filepath.Join(m.unitDir, systemdUnitFile) }
func (m *systemdManager) dropInPath() string {
	return filepath.Join(m.unitDir, systemdDropInDir, systemdDropInFile)
}

func (m *systemdManager) ctl(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(m.systemctl, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	s := strings.TrimSpace(out.String())
	if err != nil {
		return s, fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

// ours reports whether the unit file was written by Install, and whether
// Install created the courier user.
func (m *systemdManager) ours() (exists, ours, userCreated bool, err error) {
	b, err := os.ReadFile(m.unitPath())
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, false, nil
	}
	if err != nil {
		return false, false, false, err
	}
	s := string(b)
	return true, strings.HasPrefix(s, unitHeader), strings.Contains(s, unitUserCreated), nil
}

func (m *systemdManager) Install(cfg *config.Config, out io.Writer) error {
	exists, ours, userCreated, err := m.ours()
	if err != nil {
		return err
	}
	if exists && !ours {
		return fmt.Errorf("%s exists and was not written by `courier service install`; remove it first or use it as it is", m.unitPath())
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	if _, err := user.Lookup(serviceName); err != nil {
		ua, lerr := exec.LookPath("useradd")
		if lerr != nil {
			return fmt.Errorf("the %s user is missing and useradd is not on PATH: create a system user %q first", serviceName, serviceName)
		}
		if b, err := exec.Command(ua, "--system", "--user-group", "--home-dir", "/var/lib/courier", "--no-create-home",
			"--shell", "/usr/sbin/nologin", "--comment", "courier service", serviceName).CombinedOutput(); err != nil {
			return fmt.Errorf("create the %s user: %w: %s", serviceName, err, bytes.TrimSpace(b))
		}
		userCreated = true
		fmt.Fprintf(out, "created the system user %s\n", serviceName)
	}
	if err := os.WriteFile(m.unitPath(), []byte(renderUnit(exe, cfg.File, userCreated)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s (the packaged unit, running %s with %s)\n", m.unitPath(), exe, cfg.File)
	paths := writablePaths(cfg, config.DefaultDataDir())
	if d := renderDropIn(cfg.File, paths); d != "" {
		if err := os.MkdirAll(filepath.Dir(m.dropInPath()), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(m.dropInPath(), []byte(d), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s: ReadWritePaths= for %s\n", m.dropInPath(), strings.Join(paths, ", "))
	} else if err := m.removeDropIn(); err != nil {
		return err
	}
	if _, err := m.ctl("daemon-reload"); err != nil {
		return err
	}
	_, err = m.ctl("enable", systemdUnitFile)
	return err
}

func (m *systemdManager) removeDropIn() error {
	if err := os.Remove(m.dropInPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// The folder only if it is empty: an admin's own drop-ins stay.
	if err := os.Remove(filepath.Dir(m.dropInPath())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		if entries, rerr := os.ReadDir(filepath.Dir(m.dropInPath())); rerr == nil && len(entries) > 0 {
			return nil
		}
		return err
	}
	return nil
}

func (m *systemdManager) Uninstall(out io.Writer) error {
	exists, ours, userCreated, err := m.ours()
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: %s is missing (a packaged courier is removed with the package manager)", errNotInstalled, m.unitPath())
	}
	if !ours {
		return fmt.Errorf("%s was not written by `courier service install`; left as it is", m.unitPath())
	}
	if _, err := m.ctl("disable", "--now", systemdUnitFile); err != nil {
		return err
	}
	if err := os.Remove(m.unitPath()); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %s\n", m.unitPath())
	if err := m.removeDropIn(); err != nil {
		return err
	}
	if userCreated {
		if b, err := exec.Command("userdel", serviceName).CombinedOutput(); err != nil {
			return fmt.Errorf("remove the %s user: %w: %s", serviceName, err, bytes.TrimSpace(b))
		}
		fmt.Fprintf(out, "removed the system user %s (the spool in /var/lib/courier stays)\n", serviceName)
	}
	_, err = m.ctl("daemon-reload")
	return err
}

func (m *systemdManager) Start() error {
	_, err := m.ctl("start", systemdUnitFile)
	return err
}

func (m *systemdManager) Stop() error {
	_, err := m.ctl("stop", systemdUnitFile)
	return err
}

func (m *systemdManager) Status() (string, error) {
	load, err := m.ctl("show", "--property=LoadState", "--value", systemdUnitFile)
	if err != nil {
		return "", err
	}
	if load == "not-found" {
		return "not installed", nil
	}
	// is-active exits non-zero for anything but active: read its word.
	state, _ := m.ctl("is-active", systemdUnitFile)
	switch state {
	case "active", "reloading", "activating", "deactivating":
		return "running", nil
	}
	return "stopped", nil
}

// On Linux the agent runs as a plain process under systemd (SIGTERM stops it).
func isInteractive() bool { return true }

func runAsService(cfg *config.Config, stderr io.Writer) int {
	return fail(stderr, "service: not a Windows service")
}
