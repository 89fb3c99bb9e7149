package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// LocalOnly are the keys a pushed configuration cannot set (CONTRACT.md, "Remote
// configuration"): who the agent is, where its spool lives, how it reaches the
// broker the pushes come from, and which keys it trusts.
var LocalOnly = []string{"agent.id", "agent.data_dir", "mqtt", "remote_config"}

// Overlay applies a pushed document (JSON or YAML, the keys of the local file:
// typically sources, upload, spool, events, privacy, log) over base, the local
// configuration, and validates the result. Maps merge key by key, a list (sources)
// replaces the local one, null removes a key (its default applies). ${ENV} is not
// expanded in a pushed document.
//
// It refuses, naming the key: a local-only key (LocalOnly), anything that does
// not validate, and what leaves the local limits: a watched folder or move target
// outside remote_config.allowed_paths and the folders the local file names, an
// upload.endpoint not in remote_config.allowed_endpoints (empty: the local one), and
// a changed file path (events.file, log.file, secrets) outside allowed_paths and
// agent.data_dir. The local limits always refer to the local file, also when base
// is itself an Overlay result (a group's push with an agent's push over it).
// name labels the messages (e.g. "remote config v7"). The result's File is the
// local file's; base is not changed.
func Overlay(base *Config, name string, doc []byte) (*Config, error) {
	pushed, errs := parseYAML(name, doc)
	if len(errs) > 0 {
		return nil, errs
	}
	if pushed != nil && !isNull(pushed) && pushed.Kind != yaml.MappingNode {
		return nil, Errors{{File: name, Problem: "must be a map of configuration keys (sources, upload, ...)"}}
	}
	if pushed != nil {
		if es := localOnlyKeys(name, pushed, ""); len(es) > 0 {
			return nil, es
		}
	}
	under, err := base.document()
	if err != nil {
		return nil, &Error{File: name, Problem: fmt.Sprintf("cannot encode the local configuration: %v", err)}
	}
	merged := under
	if pushed != nil && !isNull(pushed) {
		merged = mergeNodes(under, pushed)
	}
	local := base
	if base.local != nil {
		local = base.local
	}
	c, errs, _ := build(name, merged, func(c *Config, p *problems) { checkLimits(local, c, p) })
	if len(errs) > 0 {
		return nil, errs
	}
	c.File = local.File
	c.local = local
	return c, nil
}

// localOnlyKeys reports every local-only key n writes, by its full path.
func localOnlyKeys(file string, n *yaml.Node, path string) Errors {
	var es Errors
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if path != "" {
			key = path + "." + k.Value
		}
		switch {
		case slices.Contains(LocalOnly, key) && v.Kind == yaml.MappingNode && len(v.Content) > 0:
			for j := 0; j+1 < len(v.Content); j += 2 { // name what it tried: mqtt.broker
				es = append(es, &Error{File: file, Key: key + "." + v.Content[j].Value, Line: v.Content[j].Line,
					Problem: "is local-only: a pushed configuration cannot change it"})
			}
		case slices.Contains(LocalOnly, key):
			es = append(es, &Error{File: file, Key: key, Line: k.Line, Problem: "is local-only: a pushed configuration cannot change it"})
		case slices.ContainsFunc(LocalOnly, func(l string) bool { return strings.HasPrefix(l, key+".") }):
			if v.Kind == yaml.MappingNode {
				es = append(es, localOnlyKeys(file, v, key)...)
			} else if !isNull(v) {
				es = append(es, &Error{File: file, Key: key, Line: k.Line, Problem: "holds local-only keys: a pushed configuration cannot change them"})
			}
		}
	}
	return es
}

// document is the local configuration as a node tree: the file as read when
// there is one (so defaults still follow what it left out), else c encoded.
func (c *Config) document() (*yaml.Node, error) {
	if c.doc != nil {
		return copyNode(c.doc), nil
	}
	var n yaml.Node
	if err := n.Encode(c); err != nil {
		return nil, err
	}
	// Every source encodes every field; keep those of its kind only.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != "sources" {
			continue
		}
		for _, src := range n.Content[i+1].Content {
			kind := ""
			for j := 0; j+1 < len(src.Content); j += 2 {
				if src.Content[j].Value == "kind" {
					kind = src.Content[j+1].Value
				}
			}
			keep := src.Content[:0]
			for j := 0; j+1 < len(src.Content); j += 2 {
				if allowed, ok := kindKeys[kind]; !ok || slices.Contains(allowed, src.Content[j].Value) {
					keep = append(keep, src.Content[j], src.Content[j+1])
				}
			}
			src.Content = keep
		}
	}
	return &n, nil
}

func copyNode(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, e := range n.Content {
		c.Content[i] = copyNode(e)
	}
	if n.Alias != nil {
		c.Alias = copyNode(n.Alias)
	}
	return &c
}

// mergeNodes returns dst with src merged in: maps key by key, anything else
// replaced; a null in src removes the key.
func mergeNodes(dst, src *yaml.Node) *yaml.Node {
	for dst.Kind == yaml.AliasNode {
		dst = dst.Alias
	}
	if dst.Kind != yaml.MappingNode || src.Kind != yaml.MappingNode {
		return copyNode(src)
	}
	out := copyNode(dst)
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		j := -1
		for x := 0; x+1 < len(out.Content); x += 2 {
			if out.Content[x].Value == k.Value {
				j = x
			}
		}
		switch {
		case isNull(v) && j >= 0:
			out.Content = slices.Delete(out.Content, j, j+2)
		case isNull(v):
		case j >= 0:
			out.Content[j+1] = mergeNodes(out.Content[j+1], v)
		default:
			out.Content = append(out.Content, copyNode(k), copyNode(v))
		}
	}
	return out
}

// checkLimits enforces the local limits on a merged configuration c.
func checkLimits(base, c *Config, p *problems) {
	rc := base.RemoteConfig
	if c.Upload.Endpoint != base.Upload.Endpoint && !slices.Contains(rc.AllowedEndpoints, c.Upload.Endpoint) {
		if len(rc.AllowedEndpoints) == 0 {
			p.bad("upload.endpoint", "a pushed configuration cannot change it: remote_config.allowed_endpoints is empty")
		} else {
			p.bad("upload.endpoint", "is not one of remote_config.allowed_endpoints")
		}
	}
	var localFolders, localTargets []string
	for _, s := range base.Sources {
		if s.Kind == KindFolder && s.Path != "" {
			localFolders = append(localFolders, absClean(s.Path))
			if dir, ok := strings.CutPrefix(s.After, "move:"); ok {
				localTargets = append(localTargets, absClean(dir))
			}
		}
	}
	allowed := make([]string, len(rc.AllowedPaths))
	for i, d := range rc.AllowedPaths {
		allowed[i] = absClean(d)
	}
	under := func(p string, roots []string) bool {
		return slices.ContainsFunc(roots, func(r string) bool { return p == r || within(p, r) })
	}
	for i, s := range c.Sources {
		if s.Kind != KindFolder || s.Path == "" {
			continue
		}
		key := fmt.Sprintf("sources[%d]", i)
		// The local file's own folders stay allowed: watching them again exposes nothing new.
		if !under(absClean(s.Path), allowed) && !under(absClean(s.Path), localFolders) {
			p.bad(key+".path", "a pushed source may only watch folders under remote_config.allowed_paths%s", emptyMeans(allowed, " (empty: the folders of the local file)"))
		}
		if dir, isMove := strings.CutPrefix(s.After, "move:"); isMove && dir != "" {
			t := absClean(dir)
			if !under(t, allowed) && !slices.Contains(localTargets, t) {
				p.bad(key+".after", "a pushed source may only move files to folders under remote_config.allowed_paths%s", emptyMeans(allowed, " (empty: the move targets of the local file)"))
			}
		}
	}
	writable := append([]string{absClean(base.Agent.DataDir)}, allowed...)
	for _, f := range []struct{ key, local, pushed string }{
		{"events.file", base.Events.File, c.Events.File},
		{"log.file", base.Log.File, c.Log.File},
		{"upload.bearer_token_file", base.Upload.BearerTokenFile, c.Upload.BearerTokenFile},
		{"upload.tls.ca_file", base.Upload.TLS.CAFile, c.Upload.TLS.CAFile},
		{"upload.tls.client_cert", base.Upload.TLS.ClientCert, c.Upload.TLS.ClientCert},
		{"upload.tls.client_key", base.Upload.TLS.ClientKey, c.Upload.TLS.ClientKey},
		{"privacy.id_salt_file", base.Privacy.IDSaltFile, c.Privacy.IDSaltFile},
	} {
		if f.pushed != f.local && f.pushed != "" && !under(absClean(f.pushed), writable) {
			p.bad(f.key, "a pushed configuration may only name files under agent.data_dir or remote_config.allowed_paths")
		}
	}
}

func emptyMeans(list []string, s string) string {
	if len(list) == 0 {
		return s
	}
	return ""
}

// Digest is the SHA-256 (hex) of the effective configuration: its canonical
// JSON (struct order, defaults applied), the same for the same settings
// whatever the file's layout, comments or key order.
func (c *Config) Digest() string {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("config: encode for digest: %v", err)) // only plain types: cannot happen
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
