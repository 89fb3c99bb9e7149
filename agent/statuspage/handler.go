package statuspage

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"time"
)

//go:embed assets
var assets embed.FS

// Source builds the current View.
type Source func(ctx context.Context) (*View, error)

// Handler serves the page at / and its data at /api/status. Mount it at the root of
// the agent's http.listen next to /metrics, /healthz and /readyz.
func Handler(src Source, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(sub)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		v, err := src(ctx)
		secure(w)
		w.Header().Set("Cache-Control", "no-store")
		if err != nil {
			log.Warn("status page: build view", "err", err)
			http.Error(w, `{"error":"status unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	})
	mux.HandleFunc("GET /{file...}", func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		switch r.PathValue("file") {
		case "", "index.html", "app.js", "style.css":
			files.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
	return mux
}

// secure keeps the page to itself: no script, style or connection from anywhere else.
func secure(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
