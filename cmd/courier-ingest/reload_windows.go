package main

import (
	"context"
	"log/slog"

	"github.com/edgecourier/courier/ingest"
)

// watchReload does nothing on Windows: there is no SIGHUP; restart the
// service to re-read the tokens file.
func watchReload(ctx context.Context, srv *ingest.Server, log *slog.Logger) (wait func()) {
	return func() {}
}
