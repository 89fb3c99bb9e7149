package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// local is a clinic's own file: remote configuration on, pushes may watch
// folders under allowed and select one other endpoint.
func localConfig(t *testing.T) (*Config, fixture, string) {
	t.Helper()
	f := newFixture(t)
	allowed := filepath.Join(f.dir, "allowed")
	for _, d := range []string{allowed, filepath.Join(allowed, "lab")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	doc := f.expand(`# the clinic's file
agent: {id: clinic-7, data_dir: {{DIR}}/data}
upload:
  endpoint: https://ingest.example.org/files/
  chunk_size: 4MiB
  retry: {initial: 2s, max: 1m}
sources:
  - {name: in, kind: folder, path: {{INBOX}}, settle: 5s}
mqtt: {broker: "ssl://broker.example.org:8883"}
remote_config:
  enabled: true
  trusted_keys: ["Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="]
  allowed_paths: [` + allowed + `]
  allowed_endpoints: ["https://ingest-b.example.org/files/"]
`)
	c, err := Parse("local.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c, f, allowed
}

func TestOverlayMerges(t *testing.T) {
	base, f, allowed := localConfig(t)
	baseDigest := base.Digest()
	push := `{"upload": {"concurrency": 2, "endpoint": "https://ingest-b.example.org/files/"},
	  "sources": [{"name": "lab", "kind": "folder", "path": "` + filepath.Join(allowed, "lab") + `", "settle": "3s", "max_size": "1GiB"}],
	  "log": {"level": "debug"}}`
	c, err := Overlay(base, "remote config v3", []byte(push))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upload.Concurrency != 2 || c.Upload.Endpoint != "https://ingest-b.example.org/files/" || c.Log.Level != "debug" {
		t.Errorf("pushed values not applied: %+v %+v", c.Upload, c.Log)
	}
	if c.Upload.ChunkSize != 4*MiB || c.Upload.Retry.Initial.String() != "2s" || c.Upload.Retry.Max.String() != "1m0s" {
		t.Errorf("local values beside the pushed ones lost: %+v", c.Upload)
	}
	if len(c.Sources) != 1 || c.Sources[0].Name != "lab" || c.Sources[0].Settle.String() != "3s" || c.Sources[0].MaxSize != GiB ||
		c.Sources[0].Rescan.D() == 0 || c.Sources[0].After != "delete" {
		t.Errorf("sources not replaced with defaults applied: %+v", c.Sources)
	}
	if c.Agent.ID != "clinic-7" || c.MQTT.Broker != "ssl://broker.example.org:8883" || !c.RemoteConfig.Enabled || c.File != "local.yaml" {
		t.Errorf("local-only values changed: %+v %+v", c.Agent, c.MQTT)
	}
	if base.Upload.Concurrency != 4 || base.Sources[0].Name != "in" || base.Digest() != baseDigest {
		t.Errorf("base changed by Overlay: %+v", base.Upload)
	}
	if c.Digest() == baseDigest {
		t.Errorf("digest unchanged by a push that changed settings")
	}
	// YAML works as well as JSON; null brings back the default.
	c2, err := Overlay(base, "v4", []byte("upload:\n  chunk_size: null\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c2.Upload.ChunkSize != 8*MiB || c2.Upload.Retry.Initial.String() != "2s" {
		t.Errorf("null did not restore the default: %+v", c2.Upload)
	}
	// An empty push is the local config.
	c3, err := Overlay(base, "v5", []byte("{}"))
	if err != nil || c3.Digest() != baseDigest {
		t.Errorf("empty push: %v, digest %s vs %s", err, c3.Digest(), baseDigest)
	}
	_ = f
}

func TestOverlayRefuses(t *testing.T) {
	base, f, allowed := localConfig(t)
	outside := f.inbox + "-other"
	os.Mkdir(outside, 0o755)
	cases := []struct{ name, push, want string }{
		{"data dir", `{"agent": {"data_dir": "/tmp/elsewhere"}}`, "v9: agent.data_dir: is local-only: a pushed configuration cannot change it"},
		{"agent id", `{"agent": {"id": "someone-else"}}`, "v9: agent.id: is local-only"},
		{"broker", `{"mqtt": {"broker": "ssl://evil.example.org:8883"}}`, "v9: mqtt.broker: is local-only"},
		{"mqtt credentials", "mqtt:\n  password_file: /tmp/pw\n", "v9: mqtt.password_file: is local-only"},
		{"remote config", `{"remote_config": {"trusted_keys": []}}`, "v9: remote_config.trusted_keys: is local-only"},
		{"remote config scalar", `{"remote_config": false}`, "v9: remote_config: is local-only"},
		{"does not validate", `{"sources": [{"name": "lab", "kind": "folder", "path": "` + allowed + `", "settle": "-2s"}]}`, `v9: sources[0].settle: must be > 0, got "-2s"`},
		{"unknown key", `{"upload": {"chunksize": "1MiB"}}`, "v9: upload.chunksize: unknown key (line 1); did you mean chunk_size?"},
		{"endpoint not allowed", `{"upload": {"endpoint": "https://evil.example.org/files/"}}`, "v9: upload.endpoint: is not one of remote_config.allowed_endpoints"},
		{"folder outside allowed_paths", `{"sources": [{"name": "x", "kind": "folder", "path": "` + outside + `"}]}`, "v9: sources[0].path: a pushed source may only watch folders under remote_config.allowed_paths"},
		{"move outside allowed_paths", `{"sources": [{"name": "x", "kind": "folder", "path": "` + allowed + `", "after": "move:/mnt/usb"}]}`, "v9: sources[0].after: a pushed source may only move files"},
		{"events file outside", `{"events": {"file": "/etc/cron.d/courier"}}`, "v9: events.file: a pushed configuration may only name files under agent.data_dir or remote_config.allowed_paths"},
		{"token file outside", `{"upload": {"bearer_token_file": "/etc/shadow"}}`, "v9: upload.bearer_token_file: a pushed configuration may only name files"},
		{"not a map", `["sources"]`, "v9: must be a map of configuration keys"},
		{"garbage", `{"upload": `, "v9: line 1:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Overlay(base, "v9", []byte(tc.push))
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n%v\ndoes not contain\n%s", err, tc.want)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Errorf("not Errors: %T", err)
			}
		})
	}
	// With allowed_paths empty, only the local file's folders may be watched.
	strict, err := Parse("local.yaml", []byte(f.expand("agent: {id: a, data_dir: {{DIR}}/d}\nupload: {endpoint: \"https://i.example.org/f/\"}\nsources: [{name: in, kind: folder, path: {{INBOX}}}]\n")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Overlay(strict, "v1", []byte(`{"sources": [{"name": "in", "kind": "folder", "path": "`+f.inbox+`", "settle": "9s"}]}`)); err != nil {
		t.Errorf("the local folder with other settings: %v", err)
	}
	if _, err := Overlay(strict, "v1", []byte(`{"sources": [{"name": "x", "kind": "folder", "path": "`+allowed+`"}]}`)); err == nil ||
		!strings.Contains(err.Error(), "(empty: the folders of the local file)") {
		t.Errorf("a new folder without allowed_paths: %v", err)
	}
	if _, err := Overlay(strict, "v1", []byte(`{"upload": {"endpoint": "https://other.example.org/f/"}}`)); err == nil ||
		!strings.Contains(err.Error(), "upload.endpoint: a pushed configuration cannot change it: remote_config.allowed_endpoints is empty") {
		t.Errorf("a new endpoint without allowed_endpoints: %v", err)
	}
}

// The digest follows the settings, not the file's layout.
func TestDigest(t *testing.T) {
	f := newFixture(t)
	a, err := Parse("a.yaml", []byte(f.expand("# comment\nagent: {id: a, data_dir: {{DIR}}/d}\nupload: {endpoint: \"https://i.example.org/f/\", concurrency: 4}\nsources: [{name: in, kind: folder, path: {{INBOX}}}]\n")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b.yaml", []byte(f.expand("sources:\n  - kind: folder\n    name: in\n    path: {{INBOX}}\n    settle: 2s\nupload:\n  endpoint: https://i.example.org/f/\nagent:\n  data_dir: {{DIR}}/d\n  id: a\n")))
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest() != b.Digest() || len(a.Digest()) != 64 {
		t.Errorf("same settings, other layout: %s vs %s", a.Digest(), b.Digest())
	}
	c, err := Parse("c.yaml", []byte(f.expand("agent: {id: a, data_dir: {{DIR}}/d}\nupload: {endpoint: \"https://i.example.org/f/\", concurrency: 3}\nsources: [{name: in, kind: folder, path: {{INBOX}}}]\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest() == a.Digest() {
		t.Errorf("other settings, same digest")
	}
}

// A push over a push (a group's, then an agent's) keeps both, and the local
// limits still refer to the local file, not to what the first push added.
func TestOverlayLayers(t *testing.T) {
	base, f, allowed := localConfig(t)
	group, err := Overlay(base, "group v1", []byte(`{"upload": {"concurrency": 2}, "log": {"level": "warn"}}`))
	if err != nil {
		t.Fatal(err)
	}
	agent, err := Overlay(group, "agent v1", []byte(`{"log": {"level": "debug"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if agent.Upload.Concurrency != 2 || agent.Log.Level != "debug" || agent.File != "local.yaml" {
		t.Errorf("layered: concurrency %d level %s file %s", agent.Upload.Concurrency, agent.Log.Level, agent.File)
	}
	// The group push watches a new allowed folder; the limits of a later push
	// are still those of the local file (remote_config unchanged, local-only).
	g2, err := Overlay(base, "group v2", []byte(`{"sources": [{"name": "lab", "kind": "folder", "path": "`+filepath.Join(allowed, "lab")+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Overlay(g2, "agent v2", []byte(`{"upload": {"endpoint": "https://evil.example.org/files/"}}`)); err == nil {
		t.Errorf("a layered push escaped allowed_endpoints")
	}
	_ = f
}

func TestAllowedPrefixes(t *testing.T) {
	s := Source{AllowedPeers: []string{"10.1.2.3/24", "::1/128"}}
	ps, err := s.AllowedPrefixes()
	if err != nil || len(ps) != 2 || ps[0].String() != "10.1.2.0/24" {
		t.Errorf("prefixes %v, %v", ps, err)
	}
}

// A Config built in code (no file behind it) can be overlaid too.
func TestOverlayOnBuiltConfig(t *testing.T) {
	f := newFixture(t)
	c := &Config{
		Agent:   Agent{ID: "a", DataDir: filepath.Join(f.dir, "d")},
		Upload:  Upload{Endpoint: "https://i.example.org/f/"},
		Sources: []Source{{Name: "in", Kind: KindFolder, Path: f.inbox}, {Name: "gw", Kind: KindMLLP, Listen: "127.0.0.1:2575"}},
		Spool:   Spool{MaxBytes: 0},
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	o, err := Overlay(c, "v1", []byte(`{"upload": {"concurrency": 3}}`))
	if err != nil {
		t.Fatal(err)
	}
	if o.Upload.Concurrency != 3 || o.Sources[1].Listen != "127.0.0.1:2575" || o.Spool.MaxBytes != c.Spool.MaxBytes || o.Sources[0].Settle != c.Sources[0].Settle {
		t.Errorf("overlay on a built config: %+v %+v", o.Upload, o.Sources)
	}
}
