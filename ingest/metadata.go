package ingest

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/tus/tusd/v2/pkg/handler"
)

// parseMetadata parses Upload-Metadata strictly (tusd's parser skips what it
// does not understand), so a broken client hears what is wrong.
func parseMetadata(header string) (map[string]string, error) {
	meta := map[string]string{}
	if strings.TrimSpace(header) == "" {
		return meta, nil
	}
	for i, pair := range strings.Split(header, ",") {
		fields := strings.Fields(pair)
		if len(fields) == 0 || len(fields) > 2 {
			return nil, fmt.Errorf("Upload-Metadata pair %d: want \"key base64value\", got %q", i+1, strings.TrimSpace(pair))
		}
		key := fields[0]
		if _, dup := meta[key]; dup {
			return nil, fmt.Errorf("Upload-Metadata: key %q appears twice", key)
		}
		val := ""
		if len(fields) == 2 {
			b, err := base64.StdEncoding.DecodeString(fields[1])
			if err != nil {
				return nil, fmt.Errorf("Upload-Metadata key %q: value is not base64: %v", key, err)
			}
			val = string(b)
		}
		meta[key] = val
	}
	// tusd reads the header with its own, stricter rules (one space, no tabs): a
	// key it would read differently (a courier-id it does not see) is refused here.
	tm := handler.ParseMetadataHeader(header)
	for k, v := range meta {
		if got, ok := tm[k]; !ok || got != v {
			return nil, fmt.Errorf("Upload-Metadata key %q: separate key and value with exactly one space", k)
		}
	}
	return meta, nil
}

// checkCourierMetadata returns what is wrong with Courier's keys, or "".
func checkCourierMetadata(meta map[string]string) string {
	cid, hasID := meta["courier-id"]
	if _, isAgent := meta["agent"]; isAgent && !hasID {
		return "Upload-Metadata has agent but no courier-id: a Courier agent must name its item"
	}
	if hasID {
		u, err := uuid.Parse(cid)
		if err != nil || u.String() != cid {
			return fmt.Sprintf("Upload-Metadata courier-id %q is not a lower-case UUID", cid)
		}
	}
	if d, ok := meta["sha256"]; ok {
		if b, err := hex.DecodeString(d); err != nil || len(b) != 32 || strings.ToLower(d) != d {
			return fmt.Sprintf("Upload-Metadata sha256 must be 64 lower-case hex digits, got %q", d)
		}
	}
	return ""
}
