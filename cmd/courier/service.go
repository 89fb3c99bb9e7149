package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/kardianos/service"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
)

// svcProgram adapts the agent to the Windows SCM / systemd life cycle.
type svcProgram struct {
	cfg      *config.Config
	stderr   io.Writer
	cancel   context.CancelFunc
	done     chan int
	stopping atomic.Bool
}

func (p *svcProgram) Start(s service.Service) error {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done = make(chan int, 1)
	go func() {
		code := runAgent(ctx, p.cfg, agent.Options{}, p.stderr)
		if !p.stopping.Load() {
			// The agent ended on its own (spool locked, disk gone): exit so the
			// service manager restarts us instead of leaving a service that does nothing.
			os.Exit(max(code, 1))
		}
		p.done <- code
	}()
	return nil
}

func (p *svcProgram) Stop(s service.Service) error {
	p.stopping.Store(true)
	p.cancel()
	<-p.done
	return nil
}

func serviceConfig(cfgPath string) *service.Config {
	return &service.Config{
		Name:        "courier",
		DisplayName: "Courier edge agent",
		Description: "Moves clinic files to central storage, verified, exactly once.",
		Arguments:   []string{"run", "--config", cfgPath},
		Option: service.KeyValue{
			"Restart":                "always",  // systemd
			"OnFailure":              "restart", // windows
			"OnFailureDelayDuration": "5s",
			"DelayedAutoStart":       true,
		},
	}
}

func isInteractive() bool { return service.Interactive() }

func runAsService(cfg *config.Config, stderr io.Writer) int {
	s, err := service.New(&svcProgram{cfg: cfg, stderr: stderr}, serviceConfig(cfg.File))
	if err != nil {
		return fail(stderr, "service: %v", err)
	}
	if err := s.Run(); err != nil {
		return fail(stderr, "service: %v", err)
	}
	return 0
}

func cmdService(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "service: want install|uninstall|start|stop|status --config FILE")
	}
	action := args[0]
	fs := newFlags("service "+action, stderr)
	cfgPath := fs.String("config", config.DefaultPath(), "config file the service runs with")
	if err := fs.Parse(args[1:]); err != nil {
		return parseFailed(err)
	}
	abs, err := filepath.Abs(*cfgPath)
	if err != nil {
		return usageErr(stderr, "service: --config %s: %v", *cfgPath, err)
	}
	if action == "install" {
		// Refuse to install a service that would fail at its first start.
		if cfg, code := loadConfig(abs, stderr); cfg == nil {
			return code
		}
	}
	s, err := service.New(&svcProgram{}, serviceConfig(abs))
	if err != nil {
		return fail(stderr, "service: %v", err)
	}
	switch action {
	case "install", "uninstall", "start", "stop":
		if err := service.Control(s, action); err != nil {
			return fail(stderr, "service %s: %v", action, err)
		}
		fmt.Fprintf(stdout, "service courier: %s done\n", action)
		return 0
	case "status":
		st, err := s.Status()
		if err != nil {
			return fail(stderr, "service status: %v", err)
		}
		names := map[service.Status]string{service.StatusRunning: "running", service.StatusStopped: "stopped", service.StatusUnknown: "unknown"}
		fmt.Fprintf(stdout, "service courier: %s\n", names[st])
		return 0
	}
	return usageErr(stderr, "service: unknown action %q (want install|uninstall|start|stop|status)", action)
}
