package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/tus/tusd/v2/pkg/handler"
)

func (s *Server) servePost(w http.ResponseWriter, r *http.Request, who string) {
	meta, err := parseMetadata(r.Header.Get("Upload-Metadata"))
	if err != nil {
		tusError(w, http.StatusBadRequest, "ERR_INVALID_METADATA", err.Error())
		return
	}
	if msg := checkCourierMetadata(meta); msg != "" {
		tusError(w, http.StatusBadRequest, "ERR_INVALID_METADATA", msg)
		return
	}
	if s.authRequired() && meta["agent"] != who {
		s.authFailure(r.Context(), who, r.RemoteAddr, meta["courier-id"], "POST: Upload-Metadata agent is not the identity")
		tusError(w, http.StatusForbidden, "ERR_FORBIDDEN",
			fmt.Sprintf("Upload-Metadata agent %q is not your identity %q", meta["agent"], who))
		return
	}
	if l := r.Header.Get("Upload-Length"); l != "" && s.opts.MaxSize > 0 {
		if n, err := strconv.ParseInt(l, 10, 64); err == nil && n > s.opts.MaxSize {
			s.audit(r.Context(), "create_refused", slog.String("id", meta["courier-id"]), slog.Int64("size", n),
				slog.String("reason", "larger than max size "+strconv.FormatInt(s.opts.MaxSize, 10)))
			tusError(w, http.StatusRequestEntityTooLarge, "ERR_MAX_SIZE_EXCEEDED",
				fmt.Sprintf("Upload-Length %d is larger than this server's maximum upload size (Tus-Max-Size) of %d bytes", n, s.opts.MaxSize))
			return
		}
	}
	if cid := meta["courier-id"]; cid != "" {
		unlock := s.creates.lock(cid)
		defer unlock()
		existing, err := s.backend.lookup(r.Context(), cid)
		if errors.Is(err, errTornInfo) {
			if !s.discardOr503(w, r, cid) {
				return
			}
			existing, err = "", nil
		}
		if err != nil {
			s.log.Error("looking up courier-id failed", "courier_id", cid, "err", err)
			tusError(w, http.StatusInternalServerError, "ERR_INTERNAL_SERVER_ERROR", "looking up courier-id failed")
			return
		}
		if existing != "" && s.answerExisting(w, r, existing, cid, who) {
			return
		}
	}
	if r.Header.Get("Content-Type") == "application/offset+octet-stream" {
		var held *heldChunk
		var ok bool
		if r, held, ok = s.holdBody(w, r, meta["courier-id"], true); !ok {
			return
		}
		if held != nil {
			defer held.Close()
		}
	}
	s.tusd.ServeHTTP(w, r)
}

// discardOr503 discards a torn upload of courierID so it can be created
// again; when that fails it answers 503 and returns false.
func (s *Server) discardOr503(w http.ResponseWriter, r *http.Request, courierID string) bool {
	if err := s.discardTorn(r.Context(), courierID); err != nil {
		s.log.Error("torn upload not discarded", "courier_id", courierID, "err", err)
		tusError(w, http.StatusServiceUnavailable, "ERR_STORE_UNAVAILABLE", "the earlier upload of this courier-id is damaged and could not be removed; try again later")
		return false
	}
	return true
}

// answerExisting answers a POST for a courier-id the server already holds
// with that upload's Location and offset. It returns false if the upload
// vanished meanwhile (then a new one is made).
func (s *Server) answerExisting(w http.ResponseWriter, r *http.Request, id, courierID, who string) bool {
	up, err := s.store.GetUpload(r.Context(), id)
	if errors.Is(err, errTornInfo) {
		// What a create cut short (a full disk) leaves: discard it, create anew.
		return !s.discardOr503(w, r, courierID)
	}
	if err != nil {
		return !s.notFoundOr503(w, id, err)
	}
	info, err := up.GetInfo(r.Context())
	if err != nil {
		return !s.notFoundOr503(w, id, err)
	}
	if l := r.Header.Get("Upload-Length"); l != "" && !info.SizeIsDeferred && l != strconv.FormatInt(info.Size, 10) {
		tusError(w, http.StatusConflict, "ERR_COURIER_ID_EXISTS",
			fmt.Sprintf("courier-id already holds an upload of %d bytes, this one says %s", info.Size, l))
		return true
	}
	if s.authRequired() && info.MetaData["agent"] != who {
		s.authFailure(r.Context(), who, r.RemoteAddr, id, "POST: courier-id belongs to an upload of another agent")
		tusError(w, http.StatusForbidden, "ERR_FORBIDDEN", "courier-id belongs to an upload of another agent")
		return true
	}
	d, err := s.verifiedDigest(r.Context(), up, info)
	switch {
	case d != "":
		w.Header().Set("Courier-Sha256", d)
	case errors.Is(err, errFileMismatch):
		// It did not verify and was discarded: make a new one.
		return false
	case err != nil:
		// A passing store error must never replace a complete upload with an empty one.
		s.log.Warn("existing upload not checked; asking the client to retry", "id", id, "err", err)
		tusError(w, http.StatusServiceUnavailable, "ERR_STORE_UNAVAILABLE", "the existing upload could not be checked, try again")
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("Location", scheme+"://"+r.Host+s.opts.BasePath+id)
	w.Header().Set("Upload-Offset", strconv.FormatInt(info.Offset, 10))
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.WriteHeader(http.StatusCreated)
	s.audit(r.Context(), "create_existing", slog.String("id", id), slog.Int64("offset", info.Offset), slog.Int64("size", info.Size), slog.String("digest", d))
	return true
}

func (s *Server) preCreate(hook handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	// servePost already checked the metadata strictly.
	return handler.HTTPResponse{}, handler.FileInfoChanges{ID: hook.Upload.MetaData["courier-id"]}, nil
}
