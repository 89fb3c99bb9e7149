package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// problems collects what validation finds.
type problems struct {
	file        string
	errs, warns Errors
}

func (p *problems) bad(key, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Key: key, Problem: fmt.Sprintf(format, args...)})
}

func (p *problems) warn(key, format string, args ...any) {
	p.warns = append(p.warns, &Error{File: p.file, Key: key, Problem: fmt.Sprintf(format, args...), Warning: true})
}

// Validate checks every key and returns all errors at once (Errors), nil if
// there are none; warnings go to c.Warnings. Call ApplyDefaults first.
func (c *Config) Validate() error {
	p := &problems{file: c.File}
	c.validate(p)
	c.Warnings = p.warns
	if len(p.errs) > 0 {
		return p.errs
	}
	return nil
}

func (c *Config) validate(p *problems) {
	c.validateAgent(p)
	c.validateUpload(p)
	c.validateSpool(p)
	c.validateSources(p)
	c.validateEvents(p)
	c.validateMQTT(p)
	c.validateRemote(p)
	checkSecretFile(p, "privacy.id_salt_file", c.Privacy.IDSaltFile, false)
	c.validateHTTPAndLog(p)
}

func (c *Config) validateAgent(p *problems) {
	if c.Agent.ID == "" {
		p.bad("agent.id", "must be set (no hostname available)")
	} else if strings.ContainsAny(c.Agent.ID, "/+#\x00 \t") {
		p.bad("agent.id", "must not contain '/', '+', '#' or spaces (it is an MQTT topic level), got %q", c.Agent.ID)
	}
	if c.Agent.DataDir == "" {
		p.bad("agent.data_dir", "must be set")
	} else if fi, err := os.Stat(c.Agent.DataDir); err == nil && !fi.IsDir() {
		p.bad("agent.data_dir", "%q is a file, not a folder", c.Agent.DataDir)
	}
}

func (c *Config) validateUpload(p *problems) {
	u := c.Upload
	if u.Endpoint == "" {
		p.bad("upload.endpoint", "must be set to the courier-ingest URL, e.g. https://ingest.example.org/files/")
	} else if ep := checkURL(p, "upload.endpoint", u.Endpoint, []string{"http", "https"},
		"put the token in upload.bearer_token_file"); ep != nil && ep.Scheme == "http" && !isLoopback(ep.Hostname()) {
		if !u.AllowInsecure {
			p.bad("upload.endpoint", "http:// to %s sends files and the token unencrypted: use https:// (or set upload.allow_insecure: true)", ep.Hostname())
		} else {
			p.warn("upload.endpoint", "http:// to %s: files and the token travel unencrypted (upload.allow_insecure is true)", ep.Hostname())
		}
	}
	if u.ChunkSize < MinChunkSize {
		p.bad("upload.chunk_size", "must be at least %s, got %s", MinChunkSize, u.ChunkSize)
	}
	if u.Concurrency < 1 || u.Concurrency > MaxConcurrency {
		p.bad("upload.concurrency", "must be between 1 and %d, got %d", MaxConcurrency, u.Concurrency)
	}
	if u.BandwidthLimit < 0 {
		p.bad("upload.bandwidth_limit", "must be >= 0 (0 = unlimited), got %d", u.BandwidthLimit)
	}
	if u.Retry.Initial <= 0 {
		p.bad("upload.retry.initial", "must be > 0, got %q", u.Retry.Initial.String())
	}
	if u.Retry.Max < u.Retry.Initial {
		p.bad("upload.retry.max", "must be >= upload.retry.initial (%s), got %q", u.Retry.Initial, u.Retry.Max.String())
	}
	if u.Retry.MaxAttempts < 1 {
		p.bad("upload.retry.max_attempts", "must be >= 1, got %d", u.Retry.MaxAttempts)
	}
	checkTLS(p, "upload.tls", u.TLS)
	checkSecretFile(p, "upload.bearer_token_file", u.BearerTokenFile, false)
}

func (c *Config) validateSpool(p *problems) {
	s := c.Spool
	if s.MaxBytes < 0 {
		p.bad("spool.max_bytes", "must be >= 0 (0 = no cap), got %d", s.MaxBytes)
	}
	if s.MinFreeDisk < 0 {
		p.bad("spool.min_free_disk", "must be >= 0 (0 = no floor), got %d", s.MinFreeDisk)
	}
	if s.KeepDone <= 0 {
		p.bad("spool.keep_done", "must be > 0, got %q", s.KeepDone.String())
	}
	if s.KeepAudit <= 0 {
		p.bad("spool.keep_audit", "must be > 0, got %q", s.KeepAudit.String())
	}
}

func (c *Config) validateSources(p *problems) {
	if len(c.Sources) == 0 {
		if c.RemoteConfig.Enabled {
			p.warn("sources", "none configured: the agent takes no files until a pushed configuration adds some")
		} else {
			p.bad("sources", "none configured: add at least one folder, mqtt or mllp source")
		}
	}
	names := map[string]int{}
	folders := map[string]int{} // absolute watched folder → source index
	listens := map[string]int{}
	for i, s := range c.Sources {
		key := fmt.Sprintf("sources[%d]", i)
		if s.Name == "" {
			p.bad(key+".name", "must be set")
		} else if j, dup := names[s.Name]; dup {
			p.bad(key+".name", "%q is already the name of sources[%d]", s.Name, j)
		} else {
			names[s.Name] = i
		}
		switch s.Priority {
		case "high", "normal", "low":
		default:
			p.bad(key+".priority", "must be one of high, normal, low, got %q", s.Priority)
		}
		switch s.HL7 {
		case "auto", "off":
		default:
			p.bad(key+".hl7", "must be auto or off, got %q", s.HL7)
		}
		if allowed, ok := kindKeys[s.Kind]; ok {
			for _, k := range c.setKeysUnder(key + ".") {
				if !slices.Contains(allowed, k) {
					p.bad(key+"."+k, "is not a key of kind %s (its keys: %s)", s.Kind, strings.Join(allowed, ", "))
				}
			}
		}
		switch s.Kind {
		case KindFolder:
			c.validateFolder(p, key, s, folders)
		case KindMQTT:
			validateFeed(p, key, s)
		case KindMLLP:
			validateMLLP(p, key, s, listens)
		case "":
			p.bad(key+".kind", "must be set to folder, mqtt or mllp")
		default:
			p.bad(key+".kind", "must be folder, mqtt or mllp, got %q", s.Kind)
		}
	}
}

// setKeysUnder lists the first key level the file wrote below prefix
// ("sources[0]." → name, kind, topics), sorted.
func (c *Config) setKeysUnder(prefix string) []string {
	seen := map[string]bool{}
	for k := range c.set {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			first, _, _ := strings.Cut(rest, ".")
			first, _, _ = strings.Cut(first, "[")
			seen[first] = true
		}
	}
	return sortedKeys(seen)
}

func (c *Config) validateFolder(p *problems, key string, s Source, folders map[string]int) {
	root := ""
	switch fi, err := statPath(s.Path); {
	case s.Path == "":
		p.bad(key+".path", "must be set for kind folder")
	case err == nil && !fi.IsDir():
		p.bad(key+".path", "%q is a file, not a folder", s.Path)
	case errors.Is(err, fs.ErrNotExist):
		p.warn(key+".path", "folder %q does not exist (yet): the source waits for it (a share mounted later?)", s.Path)
		fallthrough
	default:
		if !filepath.IsAbs(s.Path) {
			p.warn(key+".path", "%q is relative: it depends on the folder the agent starts in; write an absolute path", s.Path)
		}
		root = absClean(s.Path)
	}
	if root != "" {
		if j, dup := folders[root]; dup {
			p.bad(key+".path", "sources[%d] already watches %q: two sources on one folder would race for the same files", j, s.Path)
		} else {
			for other, j := range folders {
				if within(root, other) || within(other, root) {
					p.warn(key+".path", "%q and the folder of sources[%d] are inside one another: files there are watched twice", s.Path, j)
				}
			}
			folders[root] = indexOf(key)
		}
	}
	for j, pat := range s.Include {
		checkPattern(p, fmt.Sprintf("%s.include[%d]", key, j), pat)
	}
	for j, pat := range s.Exclude {
		checkPattern(p, fmt.Sprintf("%s.exclude[%d]", key, j), pat)
	}
	if s.Settle <= 0 {
		p.bad(key+".settle", "must be > 0, got %q", s.Settle.String())
	}
	if s.Rescan <= 0 {
		p.bad(key+".rescan", "must be > 0, got %q", s.Rescan.String())
	}
	switch dir, isMove := strings.CutPrefix(s.After, "move:"); {
	case s.After == "delete", s.After == "keep":
	case isMove && dir != "":
		target := absClean(dir)
		fi, err := os.Stat(dir)
		switch {
		case root != "" && target == root:
			p.bad(key+".after", "move target %q is the watched folder itself: the file would be taken again", dir)
		case err == nil && !fi.IsDir():
			p.bad(key+".after", "move target %q is a file, not a folder", dir)
		case root != "" && within(target, root):
			p.warn(key+".after", "move target %q is inside the watched folder: moved files stay in the watched tree (skipped, not taken again); a folder beside it is clearer", dir)
		case errors.Is(err, fs.ErrNotExist):
			p.warn(key+".after", "move target %q does not exist: it is created at the first move (a typo?)", dir)
		}
	default:
		p.bad(key+".after", `must be delete, keep or move:DIR, got %q`, s.After)
	}
	if s.MaxSize < 0 {
		p.bad(key+".max_size", "must be >= 0 (0 = no limit), got %d", s.MaxSize)
	}
}

func indexOf(key string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(key, "sources["), "]"))
	return n
}

// checkPattern validates a glob with the matcher the folder source uses
// (path.Match on base names).
func checkPattern(p *problems, key, pat string) {
	if pat == "" {
		p.bad(key, "empty pattern")
		return
	}
	if _, err := path.Match(pat, "x"); err != nil {
		p.bad(key, "bad pattern %q: %v", pat, err)
	} else if strings.ContainsAny(pat, `/\`) {
		p.warn(key, "pattern %q has a path separator but is matched against base names only: it never matches", pat)
	}
}

func validateFeed(p *problems, key string, s Source) {
	if len(s.Topics) == 0 {
		p.bad(key+".topics", "must list at least one topic filter, e.g. [\"devices/+/files/#\"]")
	}
	for j, t := range s.Topics {
		if err := checkTopicFilter(t); err != nil {
			p.bad(fmt.Sprintf("%s.topics[%d]", key, j), "%v", err)
		}
	}
	if s.QoS != nil && *s.QoS != 1 {
		p.bad(key+".qos", "must be 1 (at-least-once; nothing is acknowledged before it is spooled), got %d", *s.QoS)
	}
	if s.MaxPayload <= 0 {
		p.bad(key+".max_payload", "must be > 0, got %d", s.MaxPayload)
	}
}

func validateMLLP(p *problems, key string, s Source, listens map[string]int) {
	if s.Listen == "" {
		p.bad(key+".listen", "must be set for kind mllp, e.g. 0.0.0.0:2575")
	} else if host, ok := checkHostPort(p, key+".listen", s.Listen); ok {
		if j, dup := listens[s.Listen]; dup {
			p.bad(key+".listen", "sources[%d] already listens on %s", j, s.Listen)
		}
		listens[s.Listen] = indexOf(key)
		if !isLoopback(host) && !s.TLS.Enabled() && len(s.AllowedPeers) == 0 {
			p.warn(key+".listen", "accepts HL7 from any host on the network, unencrypted: set allowed_peers (CIDRs) or tls")
		}
	}
	t := s.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.bad(key+".tls", "cert_file and key_file must be set together")
	}
	if t.ClientCA != "" && t.CertFile == "" {
		p.bad(key+".tls.client_ca", "needs tls.cert_file and tls.key_file (client certificates are checked over TLS)")
	}
	checkReadable(p, key+".tls.cert_file", t.CertFile)
	checkSecretFile(p, key+".tls.key_file", t.KeyFile, false)
	checkReadable(p, key+".tls.client_ca", t.ClientCA)
	for j, cidr := range s.AllowedPeers {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			if _, err := netip.ParseAddr(cidr); err != nil { // a single host is fine too
				p.bad(fmt.Sprintf("%s.allowed_peers[%d]", key, j), "not a CIDR like 10.1.2.0/24 or an address, got %q", cidr)
			}
		}
	}
	if s.MaxMessage <= 0 {
		p.bad(key+".max_message", "must be > 0, got %d", s.MaxMessage)
	}
}

// AllowedPrefixes parses an MLLP source's allowed_peers (validated by Load).
func (s Source) AllowedPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(s.AllowedPeers))
	for i, c := range s.AllowedPeers {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, fmt.Errorf("allowed_peers[%d]: %w", i, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (c *Config) validateEvents(p *problems) {
	if c.Events.File != "" {
		checkParentDir(p, "events.file", c.Events.File)
	}
}

func (c *Config) validateMQTT(p *problems) {
	m := c.MQTT
	needs := ""
	switch {
	case c.Events.MQTT != nil && *c.Events.MQTT:
		needs = "events.mqtt is true"
	case c.RemoteConfig.Enabled:
		needs = "remote_config.enabled is true"
	}
	for i, s := range c.Sources {
		if s.Kind == KindMQTT && needs == "" {
			needs = fmt.Sprintf("sources[%d] is kind mqtt", i)
		}
	}
	if m.Broker == "" {
		if needs != "" {
			p.bad("mqtt.broker", "must be set: %s", needs)
		}
	} else if u := checkURL(p, "mqtt.broker", m.Broker, []string{"tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"},
		"use mqtt.username and mqtt.password_file"); u != nil {
		if u.Port() == "" && !strings.HasPrefix(u.Scheme, "ws") {
			p.bad("mqtt.broker", "needs a port, e.g. %s://%s:%s", u.Scheme, u.Hostname(), map[bool]string{true: "8883", false: "1883"}[isTLSScheme(u.Scheme)])
		}
		if !isTLSScheme(u.Scheme) && !isLoopback(u.Hostname()) {
			if !m.AllowInsecure {
				p.bad("mqtt.broker", "%s:// to %s is unencrypted (credentials and events in clear): use ssl:// (or set mqtt.allow_insecure: true)", u.Scheme, u.Hostname())
			} else {
				p.warn("mqtt.broker", "%s:// to %s: credentials and events travel unencrypted (mqtt.allow_insecure is true)", u.Scheme, u.Hostname())
			}
		}
	}
	if m.Username != "" && m.PasswordFile == "" {
		p.warn("mqtt.password_file", "not set although mqtt.username is: the agent logs in without a password")
	}
	checkSecretFile(p, "mqtt.password_file", m.PasswordFile, false)
	checkTLS(p, "mqtt.tls", m.TLS)
}

func isTLSScheme(s string) bool {
	switch s {
	case "ssl", "tls", "mqtts", "wss":
		return true
	}
	return false
}

func (c *Config) validateRemote(p *problems) {
	r := c.RemoteConfig
	if r.Enabled && len(r.TrustedKeys) == 0 {
		p.bad("remote_config.trusted_keys", "must list at least one key when remote_config.enabled is true")
	}
	for i, k := range r.TrustedKeys {
		if _, err := parsePublicKey(k); err != nil {
			p.bad(fmt.Sprintf("remote_config.trusted_keys[%d]", i), "%v", err)
		}
	}
	for i, g := range r.Groups {
		if g == "" || strings.ContainsAny(g, "/+#\x00 ") {
			p.bad(fmt.Sprintf("remote_config.groups[%d]", i), "must be a name without '/', '+', '#' or spaces (it is an MQTT topic level), got %q", g)
		}
	}
	for i, d := range r.AllowedPaths {
		if !filepath.IsAbs(d) {
			p.bad(fmt.Sprintf("remote_config.allowed_paths[%d]", i), "must be an absolute folder, got %q", d)
		}
	}
	for i, e := range r.AllowedEndpoints {
		checkURL(p, fmt.Sprintf("remote_config.allowed_endpoints[%d]", i), e, []string{"http", "https"}, "tokens belong in upload.bearer_token_file")
	}
	if r.Probation <= 0 {
		p.bad("remote_config.probation", "must be > 0, got %q", r.Probation.String())
	}
}

// PublicKeys decodes remote_config.trusted_keys (validated by Load).
func (r RemoteConfig) PublicKeys() ([]ed25519.PublicKey, error) {
	out := make([]ed25519.PublicKey, 0, len(r.TrustedKeys))
	for i, k := range r.TrustedKeys {
		pk, err := parsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("remote_config.trusted_keys[%d]: %w", i, err)
		}
		out = append(out, pk)
	}
	return out, nil
}

func parsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(strings.TrimSpace(s))
	}
	if err != nil {
		return nil, errors.New("not base64: want the one line of a PREFIX.pub made by `courier keygen`")
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not an ed25519 public key: want %d bytes, got %d (the one line of a PREFIX.pub made by `courier keygen`)", ed25519.PublicKeySize, len(b))
	}
	return ed25519.PublicKey(b), nil
}

func (c *Config) validateHTTPAndLog(p *problems) {
	if c.HTTP.Listen != "off" {
		checkHostPort(p, "http.listen", c.HTTP.Listen)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		p.bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	if c.Log.File != "" {
		checkParentDir(p, "log.file", c.Log.File)
	}
}

// checkURL parses a URL and reports a bad scheme, embedded credentials (never
// echoed: the message shows no part of the URL) and a port out of range. It
// returns nil if the URL is unusable.
func checkURL(p *problems, key, raw string, schemes []string, credHint string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		if strings.Contains(raw, "@") {
			p.bad(key, "is not a valid URL (and seems to carry credentials: %s)", credHint)
		} else {
			p.bad(key, "must be a URL like %s://host:port/, got %q", schemes[len(schemes)-1], raw)
		}
		return nil
	}
	if u.User != nil {
		p.bad(key, "must not carry a user name or password in the URL (they would end up in logs): %s", credHint)
		return nil
	}
	if !slices.Contains(schemes, u.Scheme) {
		p.bad(key, "must be a %s:// URL, got scheme %q", strings.Join(schemes, ":// or "), u.Scheme)
		return nil
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.bad(key, "port %s is out of range (1-65535)", port)
			return nil
		}
	}
	return u
}

// checkHostPort checks a listen address host:port and returns the host.
func checkHostPort(p *problems, key, addr string) (string, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.bad(key, "must be host:port, e.g. 127.0.0.1:9464 or [::1]:2575, got %q", addr)
		return "", false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		p.bad(key, "port %s is out of range (1-65535)", port)
		return "", false
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		p.bad(key, "bad host %q", host)
		return "", false
	}
	return host, true
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkTLS(p *problems, key string, t TLS) {
	checkReadable(p, key+".ca_file", t.CAFile)
	checkReadable(p, key+".client_cert", t.ClientCert)
	checkSecretFile(p, key+".client_key", t.ClientKey, false)
	if (t.ClientCert == "") != (t.ClientKey == "") {
		p.bad(key, "client_cert and client_key must be set together")
	}
}

func checkReadable(p *problems, key, file string) {
	if file == "" {
		return
	}
	fi, err := os.Stat(file)
	switch {
	case err != nil:
		p.bad(key, "cannot read %q: %v", file, unwrapPath(err))
	case fi.IsDir():
		p.bad(key, "%q is a folder, not a file", file)
	}
}

// checkSecretFile checks a token, password, salt or private key file: it must
// exist (a missing salt only warns: the agent creates one) and be private to
// its owner.
func checkSecretFile(p *problems, key, file string, mayBeMissing bool) {
	if file == "" {
		return
	}
	fi, err := os.Stat(file)
	switch {
	case err != nil && mayBeMissing && errors.Is(err, fs.ErrNotExist):
		p.warn(key, "%q does not exist: the agent creates it (0600) at first start", file)
	case err != nil:
		p.bad(key, "cannot read %q: %v", file, unwrapPath(err))
	case fi.IsDir():
		p.bad(key, "%q is a folder, not a file", file)
	case runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0:
		p.bad(key, "%q can be read or changed by group or others (mode %04o): run chmod 600 %s", file, fi.Mode().Perm(), file)
	}
}

func checkParentDir(p *problems, key, file string) {
	dir := filepath.Dir(file)
	if fi, err := os.Stat(dir); err != nil {
		p.warn(key, "folder %q does not exist: the file cannot be created until it does", dir)
	} else if !fi.IsDir() {
		p.bad(key, "%q is not a folder", dir)
	}
}

func checkTopicFilter(t string) error {
	if t == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(t, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("%q: '#' must be a whole last level", t)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("%q: '+' must be a whole level", t)
		}
	}
	return nil
}

func statPath(p string) (os.FileInfo, error) {
	if p == "" {
		return nil, errors.New("empty")
	}
	return os.Stat(p)
}

func absClean(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// within says whether p is below dir (not dir itself).
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
