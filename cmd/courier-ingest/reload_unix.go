//go:build !windows

package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgecourier/courier/ingest"
)

// watchReload re-reads the tokens file on SIGHUP until ctx ends; the
// returned func waits for that.
func watchReload(ctx context.Context, srv *ingest.Server, log *slog.Logger) (wait func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := srv.ReloadTokens(); err != nil {
					log.Error("reloading tokens failed; the previous tokens stay", "err", err)
				}
			}
		}
	}()
	return func() { <-done }
}
