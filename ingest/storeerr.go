package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/tus/tusd/v2/pkg/handler"
)

// storeFullRetryAfter is the Retry-After (seconds) of a 503 ERR_STORE_FULL.
const storeFullRetryAfter = "60"

const storeFullMessage = "the server's store is full; this is the server's fault, not the file's: " +
	"nothing was kept of this request, try again after Retry-After seconds"

// errStoreFull is what tusd answers for a store write that found no space:
// 503 with Retry-After, so clients wait and do not count it against the file.
var errStoreFull = func() handler.Error {
	e := handler.NewError("ERR_STORE_FULL", storeFullMessage, http.StatusServiceUnavailable)
	e.HTTPResponse.Header["Retry-After"] = storeFullRetryAfter
	return e
}()

// storeErr turns a full store into errStoreFull (counted and logged) and
// leaves other errors alone.
func (s *Server) storeErr(err error) error {
	if err == nil || !isNoSpace(err) {
		return err
	}
	s.metrics.storeFull.Inc()
	s.log.Warn("store full; answering 503 ERR_STORE_FULL", "err", err)
	return errStoreFull
}

// storeFull answers a request whose bytes found no space (our own writes:
// held chunks' temp files).
func (s *Server) storeFull(w http.ResponseWriter, what string) {
	s.metrics.storeFull.Inc()
	s.log.Warn("no space; answering 503 ERR_STORE_FULL", "what", what)
	w.Header().Set("Retry-After", storeFullRetryAfter)
	tusError(w, http.StatusServiceUnavailable, "ERR_STORE_FULL", storeFullMessage)
}

// storeErrReason is an audit line's reason for a failed store write.
func storeErrReason(err error) string {
	if isNoSpace(err) {
		return "store full"
	}
	var he handler.Error
	if errors.As(err, &he) {
		return he.ErrorCode
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "request ended"
	}
	return "store write failed"
}

// errTornInfo marks an upload whose .info cannot be read as JSON: what a
// full disk or a crash leaves when tusd's create was cut short. It is
// answered like an unknown upload (404); a POST of its courier-id discards
// the remains and creates the upload again.
var errTornInfo = errors.New("upload info torn (empty or not JSON)")

type tornError struct {
	id  string
	err error
}

func (e tornError) Error() string   { return fmt.Sprintf("upload %s: %v: %v", e.id, errTornInfo, e.err) }
func (e tornError) Unwrap() []error { return []error{errTornInfo, handler.ErrNotFound, e.err} }

func isJSONError(err error) bool {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	return errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, io.ErrUnexpectedEOF)
}

// discardTorn removes the remains of upload courierID whose info is torn,
// so it can be created again. The caller holds the courier-id's create lock.
// An upload whose digest state says it was verified is never discarded: that
// needs an operator (its bytes are the only copy the agent was told about).
func (s *Server) discardTorn(ctx context.Context, courierID string) error {
	st, err := s.digests.load(ctx, courierID, true)
	if err != nil {
		return fmt.Errorf("discard torn upload %s: %w", courierID, err)
	}
	if st != nil && st.Verified != "" {
		return fmt.Errorf("upload %s was verified but its info is torn: repair or remove %s.info by hand", courierID, courierID)
	}
	if err := s.backend.discard(ctx, courierID); err != nil {
		return fmt.Errorf("discard torn upload %s: %w", courierID, err)
	}
	s.digests.evict(courierID)
	s.owners.Delete(courierID)
	s.metrics.tornDiscarded.Inc()
	s.audit(ctx, "discard", slog.String("id", courierID), slog.String("reason", "torn upload info"))
	return nil
}
