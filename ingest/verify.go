package ingest

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/tus/tusd/v2/pkg/handler"
)

// addVerified sets Courier-Sha256 for a complete, verified upload.
func (s *Server) addVerified(ctx context.Context, w http.ResponseWriter, id string) {
	up, err := s.store.GetUpload(ctx, id)
	if err != nil {
		return
	}
	info, err := up.GetInfo(ctx)
	if err != nil {
		return
	}
	d, err := s.verifiedDigest(ctx, up, info)
	if err != nil && !errors.Is(err, errFileMismatch) {
		s.log.Warn("verifying upload on HEAD failed", "id", id, "err", err)
	}
	if d != "" {
		w.Header().Set("Courier-Sha256", d)
	}
}

func (s *Server) preFinish(hook handler.HookEvent) (handler.HTTPResponse, error) {
	ctx := hook.Context
	up, err := s.store.GetUpload(ctx, hook.Upload.ID)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	d, err := s.verify(ctx, up, hook.Upload)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	if d == "" {
		return handler.HTTPResponse{}, nil
	}
	return handler.HTTPResponse{Header: handler.HTTPHeader{"Courier-Sha256": d}}, nil
}

// wholeDigest returns the SHA-256 of the complete upload: from the running
// state when it covers all bytes, else by reading the stored bytes (counted
// as a fallback).
func (s *Server) wholeDigest(ctx context.Context, up handler.Upload, info handler.FileInfo) (string, *digestState, error) {
	st, err := s.digests.load(ctx, info.ID, false)
	if err != nil {
		s.log.Warn("digest state unreadable; reading the stored object", "id", info.ID, "err", err)
	}
	if st != nil && !st.Lost && st.Offset == info.Size {
		if h, err := st.hash(); err == nil {
			return hex.EncodeToString(h.Sum(nil)), st, nil
		}
	}
	s.metrics.fallback.Inc()
	s.log.Info("digest state does not cover the upload; reading the stored object", "id", info.ID, "size", info.Size)
	// Not bound to the request: a client that gives up waiting on a large object
	// must not make every retry start the read from zero again. The verified mark
	// saved at the end answers its next HEAD.
	rd, err := up.GetReader(context.WithoutCancel(ctx))
	if err != nil {
		return "", nil, fmt.Errorf("read upload %s for its digest: %w", info.ID, err)
	}
	defer rd.Close()
	h := sha256.New()
	n, err := io.Copy(h, rd)
	if err != nil {
		return "", nil, fmt.Errorf("read upload %s for its digest: %w", info.ID, err)
	}
	if n != info.Size {
		return "", nil, fmt.Errorf("read upload %s for its digest: %d bytes stored, %d expected", info.ID, n, info.Size)
	}
	state, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	return hex.EncodeToString(h.Sum(nil)), &digestState{Offset: n, State: state}, nil
}

var errFileMismatch = handler.NewError("ERR_CHECKSUM_MISMATCH", "whole-file SHA-256 differs from the sha256 metadata; the upload was discarded, upload the file again", StatusChecksumMismatch)

// verify compares a complete upload with its sha256 metadata. It returns
// the hex digest when they are equal; on a difference the upload is
// terminated and errFileMismatch returned.
func (s *Server) verify(ctx context.Context, up handler.Upload, info handler.FileInfo) (string, error) {
	want := info.MetaData["sha256"]
	if want == "" {
		return "", nil
	}
	got, st, err := s.wholeDigest(ctx, up, info)
	if err != nil {
		return "", err
	}
	if got != want {
		s.metrics.mismatch.WithLabelValues("file").Inc()
		s.log.Warn("whole-file digest mismatch; discarding upload", "id", info.ID, "size", info.Size, "want", want, "got", got)
		s.audit(ctx, "verify_failed", slog.String("id", info.ID), slog.Int64("size", info.Size), slog.String("digest", got),
			slog.String("reason", "whole-file SHA-256 differs from the sha256 metadata "+want))
		if err := (terminator{u: up.(*trackedUpload), reason: "whole-file digest mismatch"}).Terminate(context.WithoutCancel(ctx)); err != nil {
			s.log.Error("discarding mismatched upload failed", "id", info.ID, "err", err)
		}
		return "", errFileMismatch
	}
	if st.Verified != got {
		st.Verified = got
		if err := s.digests.save(context.WithoutCancel(ctx), info.ID, st); err != nil {
			s.log.Warn("verified mark not saved; it is recomputed on the next HEAD", "id", info.ID, "err", err)
		}
		s.metrics.verified.Inc()
		s.audit(ctx, "verify", slog.String("id", info.ID), slog.Int64("size", info.Size), slog.String("digest", got))
	}
	// A complete upload needs nothing in memory: HEADs read the state.
	s.digests.evict(info.ID)
	s.owners.Delete(info.ID)
	return got, nil
}

// verifiedDigest reports the verified digest of a complete upload, checking it
// first if a crash came between completion and verification.
func (s *Server) verifiedDigest(ctx context.Context, up handler.Upload, info handler.FileInfo) (string, error) {
	if info.SizeIsDeferred || info.Offset != info.Size || info.MetaData["sha256"] == "" {
		return "", nil
	}
	st, err := s.digests.load(ctx, info.ID, false)
	// A finished upload needs nothing in memory: the next HEAD reads the state again.
	s.digests.evict(info.ID)
	if err == nil && st != nil && st.Verified != "" && st.Verified == info.MetaData["sha256"] {
		return st.Verified, nil
	}
	return s.verify(ctx, up, info)
}

// errWriteOnce answers a DELETE of a verified upload.
var errWriteOnce = handler.NewError("ERR_WRITE_ONCE",
	"this upload was verified and is write-once: it cannot be terminated or replaced", http.StatusForbidden)

// preTerminate refuses to terminate a verified upload. tusd calls it with the
// upload's lock held, so no PATCH can complete (and verify) it meanwhile.
func (s *Server) preTerminate(hook handler.HookEvent) (handler.HTTPResponse, error) {
	ctx := hook.Context
	info := hook.Upload
	if info.SizeIsDeferred || info.Offset != info.Size {
		return handler.HTTPResponse{}, nil // unfinished: its owner may terminate it
	}
	up, err := s.store.GetUpload(ctx, info.ID)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	d, err := s.verifiedDigest(ctx, up, info)
	switch {
	case errors.Is(err, errFileMismatch):
		return handler.HTTPResponse{}, nil // not verified; already discarded
	case err != nil:
		return handler.HTTPResponse{}, err
	case d != "":
		s.metrics.writeOnce.Inc()
		s.audit(ctx, "terminate_refused", slog.String("id", info.ID), slog.Int64("size", info.Size), slog.String("digest", d),
			slog.String("reason", "verified uploads are write-once"))
		return handler.HTTPResponse{}, errWriteOnce
	}
	return handler.HTTPResponse{}, nil
}
