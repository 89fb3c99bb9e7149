package ingest

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"strings"
)

// checksumAlgorithms is what Tus-Checksum-Algorithm announces, in that order.
const checksumAlgorithms = "sha1,sha256,md5,crc32"

// memoryChunkLimit is how much of a held chunk stays in memory; the rest
// spills to a temporary file so many concurrent uploads cannot exhaust RAM.
const memoryChunkLimit = 4 << 20

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

// heldChunk is a request body read completely and checked before tusd sees
// it: small chunks in memory, larger ones in a temporary file.
type heldChunk struct {
	mem  *bytes.Reader
	file *os.File
	// leftover is the temp file's name when it could not be unlinked while
	// open (Windows): Close removes it.
	leftover string
	size     int64
}

// holdChunk reads body (at most limit bytes) while hashing it, and returns
// the bytes if they match sum. On mismatch nothing is kept.
func holdChunk(body io.Reader, sum chunkChecksum, limit int64, tempDir string) (*heldChunk, error) {
	h, _ := newChecksumHash(sum.alg)
	body = io.LimitReader(body, limit+1)
	var mem bytes.Buffer
	n, err := io.Copy(io.MultiWriter(&mem, h), io.LimitReader(body, memoryChunkLimit))
	if err != nil {
		return nil, fmt.Errorf("read chunk: %w", err)
	}
	held := &heldChunk{size: n}
	if n == memoryChunkLimit {
		f, err := os.CreateTemp(tempDir, "courier-chunk-*")
		if err != nil {
			return nil, fmt.Errorf("hold chunk: %w", err)
		}
		// Unlinked at once: the open descriptor keeps the bytes, and a crash
		// leaves nothing behind.
		if os.Remove(f.Name()) != nil {
			held.leftover = f.Name()
		}
		held.file = f
		if _, err := f.Write(mem.Bytes()); err != nil {
			held.Close()
			return nil, fmt.Errorf("hold chunk: %w", err)
		}
		m, err := io.Copy(io.MultiWriter(f, h), body)
		if err != nil {
			held.Close()
			return nil, fmt.Errorf("read chunk: %w", err)
		}
		held.size += m
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			held.Close()
			return nil, fmt.Errorf("hold chunk: %w", err)
		}
	} else {
		held.mem = bytes.NewReader(mem.Bytes())
	}
	if held.size > limit {
		held.Close()
		return nil, errChunkTooLarge
	}
	if !bytes.Equal(h.Sum(nil), sum.want) {
		held.Close()
		return nil, errChunkMismatch
	}
	return held, nil
}

func (c *heldChunk) Read(p []byte) (int, error) {
	if c.file != nil {
		return c.file.Read(p)
	}
	return c.mem.Read(p)
}

func (c *heldChunk) Close() error {
	if c.file != nil {
		err := c.file.Close()
		c.file = nil
		c.mem = bytes.NewReader(nil)
		if c.leftover != "" {
			_ = os.Remove(c.leftover)
		}
		return err
	}
	return nil
}
