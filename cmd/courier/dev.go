package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/ingest"
	"github.com/edgecourier/courier/uploader"
)

//go:embed dev.yaml
var devConfig []byte

func cmdDev(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dev", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address of the embedded courier-ingest")
	dir := fs.String("dir", "var", "working directory for inbox, spool, objects and events.jsonl")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	root, err := filepath.Abs(*dir)
	if err != nil {
		return usageErr(stderr, "dev: --dir %s: %v", *dir, err)
	}
	cfg, err := config.Parse("(embedded dev config)", devConfig)
	if err != nil {
		printConfigError(stderr, err)
		return 2
	}
	cfg.Agent.DataDir = filepath.Join(root, cfg.Agent.DataDir)
	cfg.Events.File = filepath.Join(root, cfg.Events.File)
	cfg.Sources[0].Path = filepath.Join(root, cfg.Sources[0].Path)
	objects := filepath.Join(root, "objects")
	for _, d := range []string{cfg.Sources[0].Path, cfg.Agent.DataDir, objects} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(stderr, "dev: %v", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := newLogger(cfg, stderr)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(stderr, "dev: cannot listen on %s for the embedded ingest (is another `courier dev` running? use --listen): %v", *listen, err)
	}
	srv, err := ingest.New(ctx, ingest.Options{Store: "file://" + objects, BasePath: "/files/", Logger: log.With("component", "ingest")})
	if err != nil {
		ln.Close()
		return fail(stderr, "dev: start ingest: %v", err)
	}
	defer srv.Close()
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("ingest server failed", "err", err)
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		wg.Wait()
	}()
	cfg.Upload.Endpoint = "http://" + ln.Addr().String() + "/files/"

	fmt.Fprintf(stderr, "courier dev: ingest on http://%s/files/ (objects in %s)\n", ln.Addr(), objects)
	fmt.Fprintf(stderr, "courier dev: drop files into %s; events go to %s and are printed below\n", cfg.Sources[0].Path, cfg.Events.File)
	return runAgent(ctx, cfg, agent.Options{EventsTee: stdout, Progress: progressPrinter(stderr)}, stderr)
}

// progressPrinter shows uploads that take more than a moment, about once a second.
func progressPrinter(w io.Writer) func(uploader.Progress) {
	type track struct{ start, last, seen time.Time }
	var mu sync.Mutex
	seen := map[string]*track{}
	return func(p uploader.Progress) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		t := seen[p.ItemID]
		if t == nil {
			// Uploads that stopped without Done (waiting, quarantined) are forgotten.
			for id, old := range seen {
				if now.Sub(old.seen) > 5*time.Minute {
					delete(seen, id)
				}
			}
			t = &track{start: now}
			seen[p.ItemID] = t
		}
		t.seen = now
		if p.Done {
			if now.Sub(t.start) > time.Second {
				fmt.Fprintf(w, "upload %s: %s sent in %s\n", p.ItemID, human(p.Total), now.Sub(t.start).Round(100*time.Millisecond))
			}
			delete(seen, p.ItemID)
			return
		}
		if now.Sub(t.start) < time.Second || now.Sub(t.last) < time.Second {
			return
		}
		t.last = now
		pct := 100.0
		if p.Total > 0 {
			pct = float64(p.Sent) * 100 / float64(p.Total)
		}
		rate := float64(p.Sent) / now.Sub(t.start).Seconds()
		fmt.Fprintf(w, "upload %s: %5.1f%% of %s (%s/s)\n", p.ItemID, pct, human(p.Total), human(int64(rate)))
	}
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
