//go:build !windows

// Command courierbench is `make bench`: Courier against the tools a clinic would pick
// instead, measured in one run on one machine, contenders alternating round by round,
// medians reported. Every contender's result is checked (exit status, HTTP status,
// stored size and digest): a failed transfer is an error, never a fast time.
//
// It writes docs/benchmarks.md (machine, date, version, the table) and
// docs/benchmarks.png (the ratios as a bar chart).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type options struct {
	root      string // repository root
	work      string // scratch directory (on the disk under test)
	largeMiB  int
	small     int
	smallKiB  int
	rounds    int
	mqttMsgs  int
	backlog   int
	out       string
	chart     string
	skipPeers bool
}

func main() {
	var o options
	flag.StringVar(&o.root, "root", ".", "repository root")
	flag.StringVar(&o.work, "work", "", "scratch directory (default: a new one under /var/tmp)")
	flag.IntVar(&o.largeMiB, "large-mib", 512, "size of the large file")
	flag.IntVar(&o.small, "small", 2000, "number of small files")
	flag.IntVar(&o.smallKiB, "small-kib", 4, "size of each small file")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per contender (medians are reported)")
	flag.IntVar(&o.mqttMsgs, "mqtt-msgs", 3000, "1 KiB messages for the MQTT intake run")
	flag.IntVar(&o.backlog, "backlog", 100000, "items in the spool for the start-up and status timings")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "report file")
	flag.StringVar(&o.chart, "chart", "docs/benchmarks.png", "chart file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "courierbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	root, err := filepath.Abs(o.root)
	if err != nil {
		return err
	}
	o.root = root
	if o.work == "" {
		if o.work, err = os.MkdirTemp("/var/tmp", "courierbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.work)
	}
	b := &bench{o: o, start: time.Now()}
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.all(ctx); err != nil {
		return err
	}
	return b.report()
}
