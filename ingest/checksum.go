package ingest

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"strings"
)

// checksumAlgorithms is what Tus-Checksum-Algorithm announces, in that order.
const checksumAlgorithms = "sha1,sha256,md5,crc32"

var (
	errUnknownAlgorithm = errors.New("unsupported checksum algorithm")
	errMalformedSum     = errors.New("malformed Upload-Checksum header")
	errChunkTooLarge    = errors.New("chunk larger than the server accepts")
	errChunkMismatch    = errors.New("chunk checksum mismatch")
)

// chunkChecksum is a parsed Upload-Checksum header: "<alg> <base64>".
type chunkChecksum struct {
	alg  string
	want []byte
}

func newChecksumHash(alg string) (hash.Hash, bool) {
	switch alg {
	case "sha1":
		return sha1.New(), true
	case "sha256":
		return sha256.New(), true
	case "md5":
		return md5.New(), true
	case "crc32":
		return crc32.NewIEEE(), true
	}
	return nil, false
}

func parseUploadChecksum(header string) (chunkChecksum, error) {
	alg, b64, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || alg == "" || b64 == "" || strings.Contains(b64, " ") {
		return chunkChecksum{}, fmt.Errorf("%w: want \"<algorithm> <base64 digest>\", got %q", errMalformedSum, header)
	}
	h, known := newChecksumHash(strings.ToLower(alg))
	if !known {
		return chunkChecksum{}, fmt.Errorf("%w %q: supported are %s", errUnknownAlgorithm, alg, checksumAlgorithms)
	}
	want, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return chunkChecksum{}, fmt.Errorf("%w: digest is not base64: %v", errMalformedSum, err)
	}
	if len(want) != h.Size() {
		return chunkChecksum{}, fmt.Errorf("%w: %s digest must be %d bytes, got %d", errMalformedSum, alg, h.Size(), len(want))
	}
	return chunkChecksum{alg: strings.ToLower(alg), want: want}, nil
}
