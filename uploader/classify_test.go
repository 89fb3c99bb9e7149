package uploader

import (
	"errors"
	"net/http"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		code int
		body string
		want failKind
		is   error
	}{
		{401, "ERR_UNAUTHORIZED: unknown token", failPaused, ErrUnauthorized},
		{403, "ERR_FORBIDDEN: upload of another agent", failPaused, ErrUnauthorized},
		{412, "ERR_UNSUPPORTED_VERSION", failPaused, nil},
		{460, "ERR_CHECKSUM_MISMATCH", failCounted, ErrChecksumMismatch},
		{500, "ERR_INTERNAL_SERVER_ERROR", failCounted, ErrServer},
		{503, "", failCounted, ErrServer},
		{503, "ERR_STORE_FULL: no space", failLink, ErrServer},
		{503, "ERR_STORE_UNAVAILABLE: try again", failLink, ErrServer},
		{503, "ERR_SERVER_BUSY: held chunks", failLater, ErrServer},
		{307, "", failPaused, ErrOutsideEndpoint},
		{409, "ERR_MISMATCHED_OFFSET", failLater, nil},
		{423, "ERR_UPLOAD_LOCKED", failLater, nil},
		{429, "", failLater, nil},
		{400, "ERR_UPLOAD_INTERRUPTED: upload has been interrupted", failLater, nil},
		{400, "ERR_INVALID_METADATA: bad", failFile, ErrRejected},
		{413, "ERR_MAX_SIZE_EXCEEDED", failFile, ErrRejected},
		{413, "ERR_CHUNK_TOO_LARGE: chunk of 9 bytes", failPaused, nil},
		{200, "", failCounted, nil},
	}
	for _, tt := range tests {
		f := reply{method: http.MethodPatch, url: "http://127.0.0.1/files/x", code: tt.code, header: http.Header{}, body: tt.body}.classify()
		if f.kind != tt.want {
			t.Errorf("%d %q: kind %d, want %d", tt.code, tt.body, f.kind, tt.want)
		}
		if tt.is != nil && !errors.Is(f, tt.is) {
			t.Errorf("%d %q: %v is not %v", tt.code, tt.body, f, tt.is)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	u := &Uploader{opts: Options{Retry: Retry{Initial: 100, Max: 1000}}}
	for n := 1; n < 70; n++ {
		ceiling := min(int64(100)<<min(n-1, 20), 1000)
		for range 50 {
			if d := u.backoff(n); d < 0 || int64(d) > ceiling {
				t.Fatalf("backoff(%d) = %d, want within [0, %d]", n, d, ceiling)
			}
		}
	}
}
