package uploader

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgecourier/courier/ingest"
)

// tusServer is the real courier-ingest handler with a file store.
type tusServer struct {
	dir     string
	srv     *ingest.Server
	handler http.Handler
}

func newTusServer(t testing.TB, mods ...func(*ingest.Options)) *tusServer {
	t.Helper()
	s, err := openTusServer(t.TempDir(), mods...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func openTusServer(dir string, mods ...func(*ingest.Options)) (*tusServer, error) {
	opts := ingest.Options{
		Store:    "file://" + dir,
		BasePath: "/files/",
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if os.Getenv("UPLOADER_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", "ingest")
	}
	for _, m := range mods {
		m(&opts)
	}
	srv, err := ingest.New(context.Background(), opts)
	if err != nil {
		return nil, err
	}
	return &tusServer{dir: dir, srv: srv, handler: srv.Handler()}, nil
}

// object returns the stored bytes of upload id (objects are named by courier-id).
func (s *tusServer) object(id string) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.dir, id))
}
