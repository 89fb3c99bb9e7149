package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	cfgPath := fs.String("config", "", "config file (default "+config.DefaultPath()+")")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	if !isInteractive() {
		return runAsService(cfg, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runAgent(ctx, cfg, agent.Options{}, stderr)
}

// runAgent runs the agent until ctx ends.
func runAgent(ctx context.Context, cfg *config.Config, opts agent.Options, stderr io.Writer) int {
	log := newLogger(cfg, stderr)
	opts.Logger = log
	opts.Version = version
	a, err := agent.New(ctx, cfg, opts)
	if err != nil {
		return fail(stderr, "start agent: %v", err)
	}
	if err := a.Run(ctx); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			printConfigError(stderr, ce)
			return 2
		}
		return fail(stderr, "agent stopped: %v", err)
	}
	log.Info("courier agent stopped")
	return 0
}
