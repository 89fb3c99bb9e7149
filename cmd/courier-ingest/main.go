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
	"net/http"
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
	store := fs.String("store", "file://./var/objects", "file:///DIR or s3://BUCKET?endpoint=URL&region=R")
	basePath := fs.String("base-path", ingest.DefaultBasePath, "URL path of the tus endpoint")
	tokens := fs.String("tokens", "", "file of \"agent-id token\" lines (re-read on SIGHUP)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	clientCA := fs.String("client-ca", "", "CA (PEM) whose client certificates identify agents by CN; needs --tls-cert")
	maxSize := fs.Int64("max-size", 0, "largest upload in bytes (0 = no limit)")
	maxChunk := fs.Int64("max-chunk-size", ingest.DefaultMaxChunkSize, "largest chunk (one request body) in bytes")
	expire := fs.Duration("expire-after", ingest.DefaultExpireAfter, "remove incomplete uploads untouched this long (0 = never)")
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
	if *maxSize < 0 || *maxChunk <= 0 || *expire < 0 {
		return usageError{"--max-size, --max-chunk-size and --expire-after must not be negative"}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError{fmt.Sprintf("--log-level %q: %v", *logLevel, err)}
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *expire == 0 {
		*expire = -1 // Options: negative = never
	}
	srv, err := ingest.New(ctx, ingest.Options{
		Store:        *store,
		BasePath:     *basePath,
		MaxSize:      *maxSize,
		MaxChunkSize: *maxChunk,
		Tokens:       *tokens,
		ClientCA:     *clientCA,
		ExpireAfter:  *expire,
		Logger:       log,
	})
	if errors.Is(err, ingest.ErrInvalidOptions) {
		return usageError{err.Error()}
	}
	if err != nil {
		return err
	}
	defer srv.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second}
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			ln.Close()
			return usageError{fmt.Sprintf("--tls-cert %s / --tls-key %s: %v", *tlsCert, *tlsKey, err)}
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		srv.ConfigureTLS(hs.TLSConfig)
		ln = tls.NewListener(ln, hs.TLSConfig)
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

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", *listen, err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("shutdown did not finish cleanly", "err", err)
	}
	<-errc
	return nil
}
