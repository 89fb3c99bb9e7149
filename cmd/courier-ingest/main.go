// Command courier-ingest is Courier's central receiver: a tus server that
// checks chunk checksums and whole-file SHA-256 and stores objects under
// their courier-id. See ingest/README.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgecourier/courier/ingest"
)

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// version, commit and date are set at build time (make: -ldflags -X main.version=…).
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stderr)
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "courier-ingest:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "courier-ingest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("courier-ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	metricsListen := fs.String("metrics-listen", "", "serve /metrics (and /healthz, /readyz) on this address instead of the upload port")
	store := fs.String("store", "file://./var/objects", "file:///DIR or s3://BUCKET?endpoint=URL&region=R")
	basePath := fs.String("base-path", ingest.DefaultBasePath, "URL path of the tus endpoint")
	tokens := fs.String("tokens", "", "file of \"agent-id token\" lines (re-read on SIGHUP)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	clientCA := fs.String("client-ca", "", "CA (PEM) whose client certificates identify agents by CN; needs --tls-cert")
	maxSize := fs.Int64("max-size", ingest.DefaultMaxSize, "largest upload in bytes, announced as Tus-Max-Size (0 = no limit)")
	maxChunk := fs.Int64("max-chunk-size", ingest.DefaultMaxChunkSize, "largest checksummed chunk (one request body with Upload-Checksum) in bytes; bodies without Upload-Checksum stream, bounded by the upload's length")
	chunkMem := fs.Int64("chunk-memory", ingest.DefaultChunkMemory, "bytes of one checksummed chunk held in memory; the rest spills to --temp-dir")
	heldMem := fs.Int64("held-memory", ingest.DefaultHeldMemory, "memory all checksummed chunks may hold together (503 ERR_SERVER_BUSY beyond)")
	heldDisk := fs.Int64("held-disk", ingest.DefaultHeldDisk, "temporary disk all checksummed chunks may hold together (503 ERR_SERVER_BUSY beyond)")
	tempDir := fs.String("temp-dir", "", "directory for spilled chunks (default: the system's temp dir)")
	expire := fs.Duration("expire-after", ingest.DefaultExpireAfter, "remove incomplete uploads untouched this long (0 = never)")
	maxConns := fs.Int("max-conns", ingest.DefaultMaxConns, "connections in total; more wait to be accepted (0 = no cap)")
	maxConnsPerAddr := fs.Int("max-conns-per-addr", ingest.DefaultMaxConnsPerAddr, "connections from one remote IP address; more are closed (0 = no cap; use 0 behind a proxy)")
	readHeaderTimeout := fs.Duration("read-header-timeout", ingest.DefaultReadHeaderTimeout, "time for the TLS handshake and a request's headers")
	idleTimeout := fs.Duration("idle-timeout", ingest.DefaultIdleTimeout, "close a kept-alive connection idle this long")
	writeTimeout := fs.Duration("write-timeout", ingest.DefaultWriteTimeout, "longest a response write may block")
	minBodyRate := fs.Int64("min-body-rate", ingest.DefaultMinBodyRate, "bytes/s a request body must average (after its first --max-body-pause); 0 = no minimum")
	maxBodyPause := fs.Duration("max-body-pause", ingest.DefaultMaxBodyPause, "longest a request body may send nothing")
	maxHeaderBytes := fs.Int("max-header-bytes", ingest.DefaultMaxHeaderBytes, "largest request header block; larger → 431")
	logLevel := fs.String("log-level", "info", "debug | info | warn | error")
	showVersion := fs.Bool("version", false, "print the version, commit and build date, then exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if *showVersion {
		fmt.Fprintf(os.Stdout, "courier-ingest %s (commit %s, built %s)\n", version, commit, date)
		return nil
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usageError{"--tls-cert and --tls-key go together"}
	}
	if *clientCA != "" && *tlsCert == "" {
		return usageError{"--client-ca needs --tls-cert and --tls-key (client certificates need TLS)"}
	}
	for _, c := range []struct {
		name string
		bad  bool
		got  any
	}{
		{"--max-size", *maxSize < 0, *maxSize},
		{"--max-chunk-size", *maxChunk <= 0, *maxChunk},
		{"--chunk-memory", *chunkMem <= 0, *chunkMem},
		{"--held-memory", *heldMem <= 0, *heldMem},
		{"--held-disk", *heldDisk <= 0, *heldDisk},
		{"--expire-after", *expire < 0, *expire},
		{"--max-conns", *maxConns < 0, *maxConns},
		{"--max-conns-per-addr", *maxConnsPerAddr < 0, *maxConnsPerAddr},
		{"--read-header-timeout", *readHeaderTimeout <= 0, *readHeaderTimeout},
		{"--idle-timeout", *idleTimeout <= 0, *idleTimeout},
		{"--write-timeout", *writeTimeout <= 0, *writeTimeout},
		{"--min-body-rate", *minBodyRate < 0, *minBodyRate},
		{"--max-body-pause", *maxBodyPause <= 0, *maxBodyPause},
		{"--max-header-bytes", *maxHeaderBytes < 4096, *maxHeaderBytes},
	} {
		if c.bad {
			return usageError{fmt.Sprintf("%s: out of range, got %v", c.name, c.got)}
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError{fmt.Sprintf("--log-level %q: %v", *logLevel, err)}
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Options: 0 = default, negative = off.
	off := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	srv, err := ingest.New(ctx, ingest.Options{
		Store:        *store,
		BasePath:     *basePath,
		MaxSize:      off(*maxSize),
		MaxChunkSize: *maxChunk,
		ChunkMemory:  *chunkMem,
		HeldMemory:   *heldMem,
		HeldDisk:     *heldDisk,
		TempDir:      *tempDir,
		Tokens:       *tokens,
		ClientCA:     *clientCA,
		ExpireAfter:  time.Duration(off(int64(*expire))),
		Net: ingest.NetOptions{
			MaxConns:          int(off(int64(*maxConns))),
			MaxConnsPerAddr:   int(off(int64(*maxConnsPerAddr))),
			ReadHeaderTimeout: *readHeaderTimeout,
			IdleTimeout:       *idleTimeout,
			WriteTimeout:      *writeTimeout,
			MinBodyRate:       off(*minBodyRate),
			MaxBodyPause:      *maxBodyPause,
			MaxHeaderBytes:    *maxHeaderBytes,
		},
		Logger: log,
	})
	if errors.Is(err, ingest.ErrInvalidOptions) {
		return usageError{err.Error()}
	}
	if err != nil {
		return err
	}
	defer srv.Close()

	var tlsConfig *tls.Config
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return usageError{fmt.Sprintf("--tls-cert %s / --tls-key %s: %v", *tlsCert, *tlsKey, err)}
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		srv.ConfigureTLS(tlsConfig)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	var metricsLn net.Listener
	if *metricsListen != "" {
		metricsLn, err = net.Listen("tcp", *metricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen %s (--metrics-listen): %w", *metricsListen, err)
		}
		log.Info("metrics listening", "addr", metricsLn.Addr().String())
	}
	log.Info("listening", "addr", ln.Addr().String(), "tls", *tlsCert != "")
	if *tokens == "" && *clientCA == "" {
		log.Warn("no --tokens and no --client-ca: anyone who reaches this port may upload (dev mode)")
	}

	waitReload := watchReload(ctx, srv, log)
	defer func() {
		stop()
		waitReload()
	}()

	err = srv.Serve(ctx, ln, tlsConfig, metricsLn)
	log.Info("shut down")
	return err
}
