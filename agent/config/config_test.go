package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `
agent: { id: clinic-042, data_dir: /tmp/courier-test }
upload: { endpoint: "https://ingest.example.org/files/" }
sources:
  - { name: lab, kind: folder, path: /srv/lab }
`

func TestDefaults(t *testing.T) {
	c, err := Parse("test.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upload.ChunkSize != 8*MiB || c.Upload.Concurrency != 4 || !*c.Upload.RequireVerification {
		t.Errorf("upload defaults: %+v", c.Upload)
	}
	if c.Upload.Retry.Initial.D() != time.Second || c.Upload.Retry.Max.D() != 5*time.Minute || c.Upload.Retry.MaxAttempts != 30 {
		t.Errorf("retry defaults: %+v", c.Upload.Retry)
	}
	if c.Spool.MaxBytes != 10*GiB || c.Spool.MinFreeDisk != GiB || c.Spool.KeepDone.D() != 168*time.Hour {
		t.Errorf("spool defaults: %+v", c.Spool)
	}
	s := c.Sources[0]
	if s.Settle.D() != 2*time.Second || s.After != "delete" || s.MaxSize != 2*GiB || s.Priority != "normal" || s.HL7 != "auto" {
		t.Errorf("source defaults: %+v", s)
	}
	if strings.Join(s.Exclude, ",") != "*.tmp,*.part,~*,.*" || strings.Join(s.Include, ",") != "*" {
		t.Errorf("pattern defaults: %v %v", s.Include, s.Exclude)
	}
	if *c.Events.MQTT {
		t.Errorf("events.mqtt on without a broker")
	}
	withBroker, err := Parse("b.yaml", []byte(minimal+"mqtt: {broker: \"tcp://127.0.0.1:1883\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !*withBroker.Events.MQTT {
		t.Errorf("events.mqtt off by default although mqtt.broker is set")
	}
	if c.HTTP.Listen != "127.0.0.1:9464" || c.Log.Format != "json" {
		t.Errorf("http/log defaults: %+v %+v", c.HTTP, c.Log)
	}
}

func TestErrorsNameFileKeyProblem(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"negative settle", `sources: [{name: a, kind: folder, path: /x, settle: -2s}]`, `bad.yaml: sources[0].settle: must be > 0, got "-2s"`},
		{"bad after", `sources: [{name: a, kind: folder, path: /x, after: shred}]`, `sources[0].after: must be delete, keep or move:DIR`},
		{"no path", `sources: [{name: a, kind: folder}]`, `sources[0].path: must be set`},
		{"dup name", `sources: [{name: a, kind: folder, path: /x}, {name: a, kind: folder, path: /y}]`, `sources[1].name: "a" is already the name of sources[0]`},
		{"bad kind", `sources: [{name: a, kind: ftp}]`, `sources[0].kind: must be folder, mqtt or mllp, got "ftp"`},
		{"mqtt without broker", `sources: [{name: b, kind: mqtt, topics: ["d/+/f/#"]}]`, `mqtt.broker: must be set`},
		{"bad topic", "mqtt: {broker: tcp://127.0.0.1:1883}\nsources: [{name: b, kind: mqtt, topics: [\"d/#/x\"]}]", `sources[0].topics[0]:`},
		{"bad priority", `sources: [{name: a, kind: folder, path: /x, priority: urgent}]`, `sources[0].priority: must be one of high, normal, low`},
		{"bad endpoint", `upload: {endpoint: "ftp://x"}`, `upload.endpoint: must be an http:// or https:// URL`},
		{"tiny chunk", `upload: {chunk_size: 1KiB}`, `upload.chunk_size: must be at least 64KiB`},
		{"unknown key", `upload: {chunksize: 1MiB}`, `upload.chunksize: unknown key (line 2)`},
		{"bad size", `spool: {max_bytes: lots}`, `spool.max_bytes: bad size "lots"`},
		{"missing file", `upload: {bearer_token_file: /nonexistent/token}`, `upload.bearer_token_file: cannot read "/nonexistent/token"`},
		{"remote config without keys", "mqtt: {broker: tcp://127.0.0.1:1883}\nremote_config: {enabled: true}", `remote_config.trusted_keys: must list at least one key`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := "agent: {id: a1, data_dir: /tmp/x}\nupload: {endpoint: \"https://i.example.org/files/\"}\n" + tc.yaml
			// Later keys override earlier ones in our test documents: merge upload lines.
			if strings.HasPrefix(tc.yaml, "upload:") {
				doc = "agent: {id: a1, data_dir: /tmp/x}\n" + strings.Replace(tc.yaml, "upload: {", "upload: {endpoint: \"https://i.example.org/files/\", ", 1)
				if strings.Contains(tc.yaml, "endpoint") {
					doc = "agent: {id: a1, data_dir: /tmp/x}\n" + tc.yaml
				}
			}
			_, err := Parse("bad.yaml", []byte(doc))
			if err == nil {
				t.Fatalf("no error for:\n%s", doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "bad.yaml: ") {
				t.Errorf("error %q does not start with the file name", err)
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("COURIER_TEST_ENDPOINT", "https://from-env.example.org/files/")
	c, err := Parse("env.yaml", []byte(strings.Replace(minimal, `"https://ingest.example.org/files/"`, `"${COURIER_TEST_ENDPOINT}"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("COURIER_TEST_N", "3")
	c2, err := Parse("env.yaml", []byte("agent: {id: a, data_dir: /tmp/x}\nupload:\n  endpoint: https://x.example.org/files/\n  concurrency: ${COURIER_TEST_N}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c2.Upload.Concurrency != 3 {
		t.Errorf("numeric env value: concurrency %d, want 3", c2.Upload.Concurrency)
	}
	if c.Upload.Endpoint != "https://from-env.example.org/files/" {
		t.Errorf("endpoint %q", c.Upload.Endpoint)
	}
	_, err = Parse("env.yaml", []byte(strings.Replace(minimal, "clinic-042", `"${COURIER_UNSET_VAR_X}"`, 1)))
	if err == nil || !strings.Contains(err.Error(), "COURIER_UNSET_VAR_X") {
		t.Errorf("unset variable: %v", err)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]Size{"8MiB": 8 << 20, "10GiB": 10 << 30, "1024": 1024, "200KB": 200000, "1.5GiB": 3 << 29, "0": 0} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "MiB", "-x", "99999999999999999999", "9999999TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q): no error", bad)
		}
	}
}

// The shipped examples must stay valid (files they name are made to exist here).
func TestExampleConfigs(t *testing.T) {
	for _, name := range []string{"clinic-pc.yaml", "device-hub.yaml"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", "configs", name))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(name, b)
			var es Errors
			if err != nil && !errors.As(err, &es) {
				t.Fatal(err)
			}
			for _, e := range es {
				if !strings.Contains(e.Problem, "cannot read") { // credential files of the target machine
					t.Errorf("%v", e)
				}
			}
		})
	}
}

// Line numbers are the file's own, blank lines and comments included.
func TestErrorLineNumbers(t *testing.T) {
	doc := "# a comment\n\nagent: {id: a1, data_dir: /tmp/x}\n\nupload:\n  endpoint: https://i.example.org/files/\n\n\nspool:\n  keep_done: 7d\n"
	_, err := Parse("ln.yaml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "ln.yaml: spool.keep_done: bad duration") || !strings.Contains(err.Error(), "(line 10)") {
		t.Fatalf("error %v, want spool.keep_done named with line 10", err)
	}
}

// An explicit 0 means "no limit" and is kept; a missing key gets the default.
func TestExplicitZeroLimits(t *testing.T) {
	c, err := Parse("z.yaml", []byte(minimal+"spool: {max_bytes: 0, min_free_disk: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Spool.MaxBytes != 0 || c.Spool.MinFreeDisk != 0 {
		t.Errorf("explicit zeros replaced: max_bytes %d, min_free_disk %d", c.Spool.MaxBytes, c.Spool.MinFreeDisk)
	}
}
