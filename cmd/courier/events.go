package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/events"
)

func cmdEvents(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "replay" {
		return usageErr(stderr, "events: want replay --config FILE --since T [--until T]")
	}
	fs := newFlags("events replay", stderr)
	cfgPath := fs.String("config", "", "config file")
	since := fs.String("since", "", "start of the window (RFC 3339, a date 2006-01-02, or a duration ago like 24h)")
	until := fs.String("until", "", "end of the window (default now)")
	dryRun := fs.Bool("dry-run", false, "print the events that would be replayed, publish nothing")
	if err := fs.Parse(args[1:]); err != nil {
		return parseFailed(err)
	}
	if *since == "" {
		return usageErr(stderr, "events replay: --since is required")
	}
	now := time.Now()
	from, err := parseWhen(*since, now)
	if err != nil {
		return usageErr(stderr, "events replay: --since: %v", err)
	}
	to := now
	if *until != "" {
		if to, err = parseWhen(*until, now); err != nil {
			return usageErr(stderr, "events replay: --until: %v", err)
		}
	}
	if !to.After(from) {
		return usageErr(stderr, "events replay: --until (%s) must be after --since (%s)", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dryRun {
		return replayDryRun(ctx, cfg, from, to, stdout, stderr)
	}
	sinks, closeSinks, err := agent.ReplaySinks(ctx, cfg, newLogger(cfg, stderr))
	if err != nil {
		return fail(stderr, "events replay: %v", err)
	}
	defer closeSinks()
	sp, err := openShared(cfg)
	if err != nil {
		return fail(stderr, "events replay: %v", err)
	}
	defer sp.Close()
	evs, err := sp.Events(ctx, from, to)
	if err != nil {
		return fail(stderr, "events replay: %v", err)
	}
	opts := agent.EventOptions(cfg)
	n := 0
	for _, ev := range evs {
		payload, err := events.Marshal(ev.Item, ev.Type, opts)
		if err != nil {
			return fail(stderr, "events replay: %v", err)
		}
		id := events.ID(ev.ItemID, ev.Type)
		for _, s := range sinks {
			if err := s.Publish(ctx, id, payload); err != nil {
				return fail(stderr, "events replay: %s after %d event(s): %v", s.Name(), n, err)
			}
		}
		n++
	}
	fmt.Fprintf(stdout, "replayed %d event(s) from %s to %s\n", n, from.Format(time.RFC3339), to.Format(time.RFC3339))
	return 0
}

// parseWhen accepts RFC 3339, a date, or a duration meaning "that long ago".
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateTime, s, time.Local); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time (want RFC 3339 like 2026-11-25T08:00:00Z, a date like 2026-11-25, or a duration like 24h)", s)
}

// replayDryRun lists the events replay would publish, and publishes nothing.
func replayDryRun(ctx context.Context, cfg *config.Config, from, to time.Time, stdout, stderr io.Writer) int {
	sp, err := openShared(cfg)
	if err != nil {
		return fail(stderr, "events replay: %v", err)
	}
	defer sp.Close()
	evs, err := sp.Events(ctx, from, to)
	if err != nil {
		return fail(stderr, "events replay: %v", err)
	}
	for _, ev := range evs {
		fmt.Fprintf(stdout, "would publish %s %s for item %s\n", events.ID(ev.ItemID, ev.Type), ev.Type, ev.ItemID)
	}
	fmt.Fprintf(stdout, "dry run: %d event(s) from %s to %s would be replayed; nothing was published\n", len(evs), from.Format(time.RFC3339), to.Format(time.RFC3339))
	return 0
}
