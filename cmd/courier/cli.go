package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
)

// newFlags makes a flag set that reports errors to stderr and never exits.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("courier "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseInterspersed parses flags that may come after positional arguments
// (`courier spool show ID --config F`), returning the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadConfig loads the file named by --config (or the platform default) and
// prints a problem as "FILE: KEY: PROBLEM", returning exit status 2.
func loadConfig(path string, stderr io.Writer) (*config.Config, int) {
	if path == "" {
		path = config.DefaultPath()
	}
	cfg, err := config.Load(path)
	if err != nil {
		printConfigError(stderr, err)
		return nil, 2
	}
	return cfg, 0
}

func printConfigError(stderr io.Writer, err error) {
	var es config.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintf(stderr, "courier: invalid config: %s\n", e)
		}
		return
	}
	fmt.Fprintf(stderr, "courier: invalid config: %s\n", err)
}

// Rotation of log.file: at most logFileMB per file, logFileBackups old files kept,
// gzip-compressed.
const (
	logFileMB      = 50
	logFileBackups = 5
)

// newLogger follows log.level and log.format; logs go to stderr, and also to
// log.file (rotated) when that is set.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	log, _ := newLeveledLogger(cfg, w)
	return log
}

// newLeveledLogger is newLogger with the level it follows, which a reload changes.
func newLeveledLogger(cfg *config.Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	lvl := new(slog.LevelVar)
	lvl.Set(agent.ParseLevel(cfg.Log.Level))
	o := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.File != "" {
		// The file lives as long as the process: lumberjack opens it on the first
		// write (creating it 0600) and rotates it by size.
		w = io.MultiWriter(w, &lumberjack.Logger{
			Filename: cfg.Log.File, MaxSize: logFileMB, MaxBackups: logFileBackups, Compress: true,
		})
	}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, o)), lvl
	}
	return slog.New(slog.NewJSONHandler(w, o)), lvl
}

// parseFailed is the exit status after a flag error: 0 for -h (help was asked
// for and printed), 2 for bad usage.
func parseFailed(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func fail(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "courier: "+format+"\n", args...)
	return 1
}

func usageErr(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "courier: "+format+"\n", args...)
	return 2
}
