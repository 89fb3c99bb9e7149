package remoteconfig

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/edgecourier/courier/agent/config"
)

// CheckLimits refuses a merged config that reaches beyond what the local file allows,
// so that a stolen signing key cannot turn clinic PCs into a way out for their files:
// folders (and move targets) only under remote_config.allowed_paths (empty: only the
// folders the local config watches), an upload endpoint only from
// remote_config.allowed_endpoints (empty: only the local one).
func CheckLimits(local, merged *config.Config) error {
	rc := local.RemoteConfig
	roots := rc.AllowedPaths
	if len(roots) == 0 {
		for _, s := range local.Sources {
			if s.Kind == "folder" || s.Kind == "" {
				roots = append(roots, s.Path)
			}
		}
	}
	for i, s := range merged.Sources {
		if s.Kind != "folder" && s.Kind != "" {
			continue
		}
		if !under(s.Path, roots) {
			return fmt.Errorf("sources[%d].path: folder is outside remote_config.allowed_paths", i)
		}
		if t, ok := strings.CutPrefix(s.After, "move:"); ok && !under(t, roots) {
			return fmt.Errorf("sources[%d].after: move target is outside remote_config.allowed_paths", i)
		}
	}
	endpoints := rc.AllowedEndpoints
	if len(endpoints) == 0 {
		endpoints = []string{local.Upload.Endpoint}
	}
	if !slices.ContainsFunc(endpoints, func(e string) bool { return sameEndpoint(e, merged.Upload.Endpoint) }) {
		return fmt.Errorf("upload.endpoint: endpoint is not one of remote_config.allowed_endpoints")
	}
	return nil
}

// under reports whether p is one of roots or below one, after resolving symlinks
// where the paths exist (a link inside an allowed folder must not lead out of it).
func under(p string, roots []string) bool {
	rp := resolve(p)
	for _, r := range roots {
		rr := resolve(r)
		if rp == rr {
			return true
		}
		if rel, err := filepath.Rel(rr, rp); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel) {
			return true
		}
	}
	return false
}

func resolve(p string) string {
	p = filepath.Clean(p)
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	// Resolve the longest existing prefix, keep the rest as written.
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

func sameEndpoint(a, b string) bool {
	return strings.TrimRight(a, "/") == strings.TrimRight(b, "/")
}
