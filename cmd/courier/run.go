package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"

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

// runAgent runs the agent until ctx ends. When the config came from a file, the
// reload signal (SIGHUP; none on Windows) reads it again and applies it.
func runAgent(ctx context.Context, cfg *config.Config, opts agent.Options, stderr io.Writer) int {
	log, lvl := newLeveledLogger(cfg, stderr)
	opts.Logger = log
	opts.LogLevel = lvl
	opts.Version = version
	for _, w := range cfg.Warnings {
		log.Warn("config warning", "file", w.File, "key", w.Key, "problem", w.Problem)
	}
	a, err := agent.New(ctx, cfg, opts)
	if err != nil {
		return fail(stderr, "start agent: %v", err)
	}
	var g errgroup.Group
	rctx, stopReload := context.WithCancel(ctx)
	if _, err := os.Stat(cfg.File); cfg.File != "" && err == nil {
		hup := make(chan os.Signal, 1)
		if sigs := reloadSignals(); len(sigs) > 0 {
			signal.Notify(hup, sigs...)
			defer signal.Stop(hup)
		}
		g.Go(func() error { reloadLoop(rctx, a, cfg.File, hup, log); return nil })
	}
	err = a.Run(ctx)
	stopReload()
	g.Wait()
	if err != nil {
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

// reloadLoop loads and validates the config file at each signal and hands it to
// Apply; an invalid file is logged key by key and the agent keeps its config.
func reloadLoop(ctx context.Context, a *agent.Agent, path string, sig <-chan os.Signal, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		}
		log.Info("reload signal: reading the configuration again", "file", path)
		cfg, err := config.Load(path)
		if err != nil {
			var es config.Errors
			var e *config.Error
			switch {
			case errors.As(err, &es):
				for _, e := range es {
					log.Error("reload: invalid configuration; keeping the running one", "file", e.File, "key", e.Key, "problem", e.Problem)
				}
			case errors.As(err, &e):
				log.Error("reload: invalid configuration; keeping the running one", "file", e.File, "key", e.Key, "problem", e.Problem)
			default:
				log.Error("reload: invalid configuration; keeping the running one", "err", err)
			}
			continue
		}
		err = a.Reload(ctx, cfg)
		switch {
		case err == nil, errors.Is(err, agent.ErrNeedsRestart):
			// Apply logged what changed and what waits for a restart.
		case errors.Is(err, agent.ErrNotRunning), ctx.Err() != nil:
			return
		default:
			log.Error("reload failed; keeping the running configuration", "err", err)
		}
	}
}
