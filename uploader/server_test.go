package uploader

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tus/tusd/v2/pkg/filestore"
	tushandler "github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
	expslog "golang.org/x/exp/slog"
)

// tusServer is tusd's real handler and file store with the part of courier-ingest's
// behaviour the uploader relies on, done the way CONTRACT.md "Upload protocol"
// describes: the checksum extension (460 on a bad chunk, offset unchanged), uploads
// named by courier-id, idempotent POST by courier-id, the whole-file SHA-256 check
// with Courier-Sha256 on the final PATCH and on later HEADs.
type tusServer struct {
	dir     string
	handler http.Handler

	mu       sync.Mutex
	verified map[string]string // upload id -> hex digest confirmed at finish
}

func newTusServer(t testing.TB) *tusServer {
	t.Helper()
	s, err := openTusServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openTusServer(dir string) (*tusServer, error) {
	s := &tusServer{dir: dir, verified: map[string]string{}}
	composer := tushandler.NewStoreComposer()
	filestore.New(s.dir).UseIn(composer)
	memorylocker.New().UseIn(composer)
	h, err := tushandler.NewHandler(tushandler.Config{
		BasePath:      "/files/",
		StoreComposer: composer,
		Logger:        expslog.New(expslog.NewTextHandler(io.Discard, nil)),
		PreUploadCreateCallback: func(ev tushandler.HookEvent) (tushandler.HTTPResponse, tushandler.FileInfoChanges, error) {
			return tushandler.HTTPResponse{}, tushandler.FileInfoChanges{ID: ev.Upload.MetaData["courier-id"]}, nil
		},
		PreFinishResponseCallback: s.finish,
	})
	if err != nil {
		return nil, err
	}
	s.handler = http.StripPrefix("/files/", s.wrap(h))
	return s, nil
}

// object returns the stored bytes of upload id.
func (s *tusServer) object(id string) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.dir, id))
}

func (s *tusServer) finish(ev tushandler.HookEvent) (tushandler.HTTPResponse, error) {
	id := ev.Upload.ID
	f, err := os.Open(filepath.Join(s.dir, id))
	if err != nil {
		return tushandler.HTTPResponse{}, err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return tushandler.HTTPResponse{}, err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != ev.Upload.MetaData["sha256"] {
		os.Remove(filepath.Join(s.dir, id))
		os.Remove(filepath.Join(s.dir, id+".info"))
		return tushandler.HTTPResponse{}, tushandler.NewError("ERR_FILE_CHECKSUM_MISMATCH", "whole-file SHA-256 mismatch", 460)
	}
	s.mu.Lock()
	s.verified[id] = got
	s.mu.Unlock()
	return tushandler.HTTPResponse{Header: tushandler.HTTPHeader{"Courier-Sha256": got}}, nil
}

func (s *tusServer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.Trim(r.URL.Path, "/")
		switch r.Method {
		case http.MethodOptions:
			w = &headerHook{ResponseWriter: w, before: func(h http.Header) {
				if ext := h.Get("Tus-Extension"); ext != "" {
					h.Set("Tus-Extension", ext+",checksum")
					h.Set("Tus-Checksum-Algorithm", "sha1,sha256,md5,crc32")
				}
			}}
		case http.MethodPost:
			cid := courierID(r.Header.Get("Upload-Metadata"))
			if _, err := os.Stat(filepath.Join(s.dir, cid+".info")); cid != "" && err == nil {
				w.Header().Set("Tus-Resumable", "1.0.0")
				w.Header().Set("Location", "/files/"+cid)
				w.WriteHeader(http.StatusCreated)
				return
			}
			if !s.checkBody(w, r) {
				return
			}
		case http.MethodPatch:
			if !s.checkBody(w, r) {
				return
			}
		case http.MethodHead:
			w = &headerHook{ResponseWriter: w, before: func(h http.Header) {
				s.mu.Lock()
				d := s.verified[id]
				s.mu.Unlock()
				if d != "" && h.Get("Upload-Offset") == h.Get("Upload-Length") {
					h.Set("Courier-Sha256", d)
				}
			}}
		}
		next.ServeHTTP(w, r)
	})
}

// checkBody verifies Upload-Checksum (sha256 or sha1 only, enough for these tests)
// and puts the checked bytes back as the body. false: the answer was written.
func (s *tusServer) checkBody(w http.ResponseWriter, r *http.Request) bool {
	hv := r.Header.Get("Upload-Checksum")
	if hv == "" {
		return true
	}
	algo, want, _ := strings.Cut(hv, " ")
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return false // client went away
	}
	var sum []byte
	switch algo {
	case "sha256":
		s := sha256.Sum256(body)
		sum = s[:]
	default:
		http.Error(w, "unsupported checksum algorithm", http.StatusBadRequest)
		return false
	}
	if base64.StdEncoding.EncodeToString(sum) != want {
		w.Header().Set("Tus-Resumable", "1.0.0")
		http.Error(w, "checksum mismatch", 460)
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return true
}

func courierID(meta string) string {
	for kv := range strings.SplitSeq(meta, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), " ")
		if k == "courier-id" {
			b, _ := base64.StdEncoding.DecodeString(v)
			return string(b)
		}
	}
	return ""
}

// headerHook changes the response header just before it is written.
type headerHook struct {
	http.ResponseWriter
	before func(http.Header)
	done   bool
}

func (h *headerHook) WriteHeader(code int) {
	if !h.done {
		h.done = true
		h.before(h.Header())
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *headerHook) Write(b []byte) (int, error) {
	if !h.done {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(b)
}

func (h *headerHook) Unwrap() http.ResponseWriter { return h.ResponseWriter }
