package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/edgecourier/courier/agent/config"
)

// serviceName is the service's name for systemd and the Windows SCM (CONTRACT).
const serviceName = "courier"

// errNoServiceManager: this machine has no service manager courier supports
// (Linux without systemd, macOS, the BSDs). No SysV scripts are written.
var errNoServiceManager = errors.New("no supported service manager")

// errNotInstalled: the courier service is not installed.
var errNotInstalled = errors.New("service not installed")

// serviceManager is the platform's service manager (systemd, the Windows SCM).
type serviceManager interface {
	// Name says which manager this is, for the user.
	Name() string
	// Install registers the service to run `courier run --config cfg.File`
	// with the running binary; it reports what it wrote to out.
	Install(cfg *config.Config, out io.Writer) error
	// Uninstall stops the service and removes exactly what Install added.
	Uninstall(out io.Writer) error
	Start() error
	Stop() error
	// Status is "running", "stopped" or "not installed".
	Status() (string, error)
}

func cmdService(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "service: want install|uninstall|start|stop|status --config FILE")
	}
	action := args[0]
	switch action {
	case "install", "uninstall", "start", "stop", "status":
	default:
		return usageErr(stderr, "service: unknown action %q (want install|uninstall|start|stop|status)", action)
	}
	fs := newFlags("service "+action, stderr)
	cfgPath := fs.String("config", config.DefaultPath(), "config file the service runs with")
	if err := fs.Parse(args[1:]); err != nil {
		return parseFailed(err)
	}
	abs, err := filepath.Abs(*cfgPath)
	if err != nil {
		return usageErr(stderr, "service: --config %s: %v", *cfgPath, err)
	}
	m, err := newServiceManager()
	if err != nil {
		return fail(stderr, "service %s: %v", action, err)
	}
	switch action {
	case "install":
		// Refuse to install a service that would fail at its first start.
		cfg, code := loadConfig(abs, stderr)
		if cfg == nil {
			return code
		}
		if err := m.Install(cfg, stdout); err != nil {
			return fail(stderr, "service install (%s): %v", m.Name(), err)
		}
		fmt.Fprintf(stdout, "service %s: installed with %s (enabled, not started: `courier service start`)\n", serviceName, m.Name())
	case "uninstall":
		if err := m.Uninstall(stdout); err != nil {
			return fail(stderr, "service uninstall (%s): %v", m.Name(), err)
		}
		fmt.Fprintf(stdout, "service %s: uninstalled from %s\n", serviceName, m.Name())
	case "start":
		if err := m.Start(); err != nil {
			return fail(stderr, "service start (%s): %v", m.Name(), err)
		}
		fmt.Fprintf(stdout, "service %s: started (%s)\n", serviceName, m.Name())
	case "stop":
		if err := m.Stop(); err != nil {
			return fail(stderr, "service stop (%s): %v", m.Name(), err)
		}
		fmt.Fprintf(stdout, "service %s: stopped (%s)\n", serviceName, m.Name())
	case "status":
		st, err := m.Status()
		if err != nil {
			return fail(stderr, "service status (%s): %v", m.Name(), err)
		}
		fmt.Fprintln(stdout, st)
	}
	return 0
}

// writablePaths are the folders the agent writes outside its data dir's
// default: folder sources (after: delete|move and .courier-rejected), move
// targets, a data dir elsewhere and the events file's folder. Sorted, unique.
func writablePaths(cfg *config.Config, defaultDataDir string) []string {
	var ps []string
	add := func(p string) {
		if p == "" {
			return
		}
		p = filepath.Clean(p)
		if rel, err := filepath.Rel(filepath.Clean(defaultDataDir), p); err == nil && filepath.IsLocal(rel) {
			return // StateDirectory= already makes it writable
		}
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	add(cfg.Agent.DataDir)
	for _, s := range cfg.Sources {
		if s.Kind != "folder" {
			continue
		}
		add(s.Path)
		if dir, ok := strings.CutPrefix(s.After, "move:"); ok {
			add(dir)
		}
	}
	if cfg.Events.File != "" {
		add(filepath.Dir(cfg.Events.File))
	}
	slices.Sort(ps)
	return ps
}
