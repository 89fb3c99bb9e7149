package config

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgecourier/courier/agent/folder"
	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
)

// fixture is a temporary machine: a watched folder that exists, so that a
// test document has no problem but the one it is about.
type fixture struct {
	dir, inbox string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{dir: dir, inbox: filepath.Join(dir, "inbox")}
	if err := os.Mkdir(f.inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// doc is a valid document with the given lines appended; {{INBOX}} and {{DIR}}
// stand for the fixture's folders.
func (f fixture) doc(extra string) []byte {
	s := "agent: {id: a1, data_dir: {{DIR}}/data}\n" +
		"upload: {endpoint: \"https://i.example.org/files/\"}\n" +
		"sources:\n  - {name: in, kind: folder, path: {{INBOX}}}\n" + extra
	return []byte(f.expand(s))
}

func (f fixture) expand(s string) string {
	return strings.NewReplacer("{{INBOX}}", f.inbox, "{{DIR}}", f.dir).Replace(s)
}

func (f fixture) write(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	f := newFixture(t)
	c, err := Parse("test.yaml", f.doc(""))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upload.ChunkSize != uploader.DefaultChunkSize || c.Upload.Concurrency != uploader.DefaultConcurrency || !*c.Upload.RequireVerification {
		t.Errorf("upload defaults: %+v", c.Upload)
	}
	if c.Upload.Retry.Initial.D() != time.Second || c.Upload.Retry.Max.D() != 5*time.Minute || c.Upload.Retry.MaxAttempts != 30 {
		t.Errorf("retry defaults: %+v", c.Upload.Retry)
	}
	if c.Spool.MaxBytes != 10*GiB || c.Spool.MinFreeDisk != GiB || c.Spool.KeepDone.D() != spool.DefaultKeepDone || c.Spool.KeepAudit.D() != 17520*time.Hour {
		t.Errorf("spool defaults: %+v", c.Spool)
	}
	s := c.Sources[0]
	if s.Settle.D() != folder.DefaultSettle || s.Rescan.D() != folder.DefaultRescan || s.After != "delete" || s.MaxSize != 2*GiB || s.Priority != "normal" || s.HL7 != "auto" {
		t.Errorf("source defaults: %+v", s)
	}
	if !slices.Equal(s.Exclude, folder.DefaultExclude) || !slices.Equal(s.Include, folder.DefaultInclude) {
		t.Errorf("pattern defaults: %v %v, want the folder source's own %v %v", s.Include, s.Exclude, folder.DefaultInclude, folder.DefaultExclude)
	}
	if *c.Events.MQTT {
		t.Errorf("events.mqtt on without a broker")
	}
	withBroker, err := Parse("b.yaml", f.doc("mqtt: {broker: \"tcp://127.0.0.1:1883\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !*withBroker.Events.MQTT {
		t.Errorf("events.mqtt off by default although mqtt.broker is set")
	}
	if c.HTTP.Listen != "127.0.0.1:9464" || c.Log.Format != "json" || c.Log.Level != "info" {
		t.Errorf("http/log defaults: %+v %+v", c.HTTP, c.Log)
	}
	if c.RemoteConfig.Probation.D() != 5*time.Minute {
		t.Errorf("remote_config.probation default %s", c.RemoteConfig.Probation)
	}
	m, err := Parse("m.yaml", f.doc("  - {name: lab, kind: mllp, listen: \"127.0.0.1:2575\"}\n  - {name: dev, kind: mqtt, topics: [d/#]}\nmqtt: {broker: \"tcp://127.0.0.1:1883\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Sources[1].MaxMessage != 16*MiB || m.Sources[2].MaxPayload != 64*MiB || *m.Sources[2].QoS != 1 {
		t.Errorf("mllp/mqtt defaults: %+v %+v", m.Sources[1], m.Sources[2])
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings for a clean config: %v", c.Warnings)
	}
}

// Each case names the key and the problem; "not" must not appear (the key the
// old line→key map blamed instead). The flow-map cases failed before the
// node-tree decoder.
func TestDecodeProblems(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, yaml string
		want, not  string
	}{
		{"flow retry initial",
			"upload: {endpoint: \"https://i.example.org/files/\", retry: {initial: soon, max: 30s}}\n",
			`upload.retry.initial: bad duration "soon"`, "upload.retry.max:"},
		{"flow retry max is not max_attempts",
			"upload:\n  endpoint: https://i.example.org/files/\n  retry: {initial: 1s, max: 5min, max_attempts: 3}\n",
			`upload.retry.max: bad duration "5min"`, "max_attempts"},
		{"flow source settle",
			"sources: [{name: a, kind: folder, path: {{INBOX}}, settle: soon, rescan: 10s}]\n",
			`sources[0].settle: bad duration "soon" (want e.g. 500ms, 2s, 5m, 168h, 7d, 1w) (line 3)`, "rescan"},
		{"flow second source",
			"sources: [{name: a, kind: folder, path: {{INBOX}}}, {name: b, kind: folder, path: /x, max_size: huge, priority: low}]\n",
			`sources[1].max_size: bad size "huge"`, "priority"},
		{"not a number",
			"upload:\n  endpoint: https://i.example.org/files/\n  concurrency: four\n",
			`upload.concurrency: not a number: want a whole number, got "four" (line 4)`, ""},
		{"fraction where a count goes",
			"upload: {endpoint: \"https://i.example.org/files/\", retry: {max_attempts: 2.5}}\n",
			`upload.retry.max_attempts: must be a whole number, got "2.5"`, ""},
		{"duration without unit",
			"spool: {keep_done: 30}\n", `spool.keep_done: bad duration "30": needs a unit, e.g. 30s or 30m`, ""},
		{"unknown key suggests",
			"upload: {endpoint: \"https://i.example.org/files/\", chunksize: 1MiB}\n",
			`upload.chunksize: unknown key (line 2); did you mean chunk_size?`, ""},
		{"unknown key at the wrong depth",
			"upload:\nendpoint: https://i.example.org/files/\n",
			`endpoint: unknown key (line 3); upload.endpoint has that name: check the indentation`, ""},
		{"written twice",
			"log: {level: info}\nlog: {level: debug}\n", `log: written twice (lines 3 and 4)`, ""},
		{"a list where one value goes",
			"log: {level: [info]}\n", `log.level: must be a single value, got a list`, ""},
		{"one value where a list goes",
			"sources: [{name: a, kind: folder, path: {{INBOX}}, include: \"*.hl7\"}]\n",
			`sources[0].include: must be a list, e.g. ["*.hl7"]`, ""},
		{"not a bool",
			"privacy: {send_filenames: maybe}\n", `privacy.send_filenames: must be true or false, got "maybe"`, ""},
		{"size with comma", "spool: {max_bytes: \"1,5GiB\"}\n", `spool.max_bytes: bad size "1,5GiB": write decimals with '.'`, ""},
		{"size fraction without unit", "spool: {max_bytes: 1.5}\n", `spool.max_bytes: bad size "1.5": a byte count without a unit must be a whole number`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := f.expand("agent: {id: a1, data_dir: {{DIR}}/data}\n" + tc.yaml)
			if !strings.Contains(tc.yaml, "sources") {
				doc += f.expand("sources: [{name: in, kind: folder, path: {{INBOX}}}]\n")
			}
			if !strings.Contains(tc.yaml, "upload") {
				doc = strings.Replace(doc, "\n", "\nupload: {endpoint: \"https://i.example.org/files/\"}\n", 1)
			}
			_, err := Parse("bad.yaml", []byte(doc))
			if err == nil {
				t.Fatalf("no error for:\n%s", doc)
			}
			if !strings.Contains(err.Error(), "bad.yaml: "+tc.want) {
				t.Errorf("error\n%s\ndoes not contain\n%s\nfor\n%s", err, tc.want, doc)
			}
			if tc.not != "" && strings.Contains(err.Error(), tc.not) {
				t.Errorf("error %q blames %q", err, tc.not)
			}
		})
	}
}

// YAML syntax problems are named on the line that is wrong, not on the line
// where the enclosing block began (where yaml.v3 points).
func TestSyntaxProblems(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"tab", "agent:\n  id: a\nupload:\n\tendpoint: x\n", "t.yaml: line 4: indented with a tab; YAML indentation must be spaces"},
		{"tab after spaces", "upload:\n  endpoint: x\n \tconcurrency: 2\n", "t.yaml: line 3: indented with a tab"},
		{"too deep", "upload:\n  endpoint: x\n   chunk_size: 8MiB\n", "t.yaml: line 3: bad indentation"},
		{"too shallow", "upload:\n  endpoint: x\n chunk_size: 8MiB\nspool: {}\n", "t.yaml: line 3: bad indentation"},
		{"list item", "sources:\n  - name: a\n    kind: folder\n   path: /x\n", "t.yaml: line 4: bad indentation"},
		{"open bracket", "sources: [{name: a}\nlog: {}\n", "t.yaml: line 1: a [ list ] that is not closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	// Every tab-indented line is named.
	_, err := Parse("t.yaml", []byte("upload:\n\tendpoint: x\n\tconcurrency: 2\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 || es[0].Line != 2 || es[1].Line != 3 {
		t.Errorf("two tab lines: %v", err)
	}
}

// All problems at once, decoding and validation, each key blamed once.
func TestEveryProblemReported(t *testing.T) {
	f := newFixture(t)
	doc := f.expand(`agent: {id: a1, data_dir: {{DIR}}/data}
upload: {endpoint: "ftp://x", chunksize: 1MiB, concurrency: 0, retry: {initial: soon}}
sources:
  - {name: in, kind: folder, path: {{INBOX}}, settle: -2s, after: shred}
`)
	_, err := Parse("all.yaml", []byte(doc))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("not Errors: %v", err)
	}
	for _, want := range []string{
		"all.yaml: upload.chunksize: unknown key (line 2); did you mean chunk_size?",
		`all.yaml: upload.retry.initial: bad duration "soon"`,
		`all.yaml: upload.endpoint: must be a http:// or https:// URL, got scheme "ftp"`,
		"all.yaml: upload.concurrency: must be between 1 and 64, got 0",
		`all.yaml: sources[0].settle: must be > 0, got "-2s"`,
		`all.yaml: sources[0].after: must be delete, keep or move:DIR, got "shred"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "upload.retry.initial"); n != 1 {
		t.Errorf("upload.retry.initial blamed %d times:\n%v", n, err)
	}
}

func TestValidation(t *testing.T) {
	f := newFixture(t)
	file := f.write(t, "a-file", "x", 0o600)
	token := f.write(t, "token", "s3cret\n", 0o644)
	privateToken := f.write(t, "token600", "s3cret\n", 0o600)
	pub := "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=" // SPKI, not a raw key: 44 bytes
	cases := []struct {
		name, yaml string
		want       string // error
		warn       string // or warning
	}{
		{"zero sources", "sources: []\n", "sources: none configured", ""},
		{"concurrency 0", "upload: {concurrency: 0}\n", "upload.concurrency: must be between 1 and 64, got 0", ""},
		{"max_attempts 0", "upload: {retry: {max_attempts: 0}}\n", "upload.retry.max_attempts: must be >= 1, got 0", ""},
		{"missing folder", "sources: [{name: a, kind: folder, path: {{DIR}}/nope}]\n", "", `sources[0].path: folder "` + f.dir + `/nope" does not exist (yet)`},
		{"path is a file", "sources: [{name: a, kind: folder, path: " + file + "}]\n", `sources[0].path: "` + file + `" is a file, not a folder`, ""},
		{"missing move target", "sources: [{name: a, kind: folder, path: {{INBOX}}, after: \"move:{{DIR}}/sent\"}]\n", "", `sources[0].after: move target "` + f.dir + `/sent" does not exist`},
		{"move target inside", "sources: [{name: a, kind: folder, path: {{INBOX}}, after: \"move:{{INBOX}}/sent\"}]\n", "", `sources[0].after: move target "` + f.inbox + `/sent" is inside the watched folder`},
		{"move target is the folder", "sources: [{name: a, kind: folder, path: {{INBOX}}, after: \"move:{{INBOX}}/\"}]\n", `sources[0].after: move target "` + f.inbox + `/" is the watched folder itself`, ""},
		{"two sources one folder", "sources: [{name: a, kind: folder, path: {{INBOX}}}, {name: b, kind: folder, path: \"{{INBOX}}/\"}]\n", `sources[1].path: sources[0] already watches`, ""},
		{"nested folders", "sources: [{name: a, kind: folder, path: {{DIR}}}, {name: b, kind: folder, path: {{INBOX}}}]\n", "", `sources[1].path: "` + f.inbox + `" and the folder of sources[0] are inside one another`},
		{"duplicate names", "sources: [{name: a, kind: folder, path: {{INBOX}}}, {name: a, kind: mllp, listen: \"127.0.0.1:2575\"}]\n", `sources[1].name: "a" is already the name of sources[0]`, ""},
		{"bad pattern", "sources: [{name: a, kind: folder, path: {{INBOX}}, exclude: [\"[x\"]}]\n", `sources[0].exclude[0]: bad pattern "[x"`, ""},
		{"key of another kind", "sources: [{name: a, kind: folder, path: {{INBOX}}, topics: [x]}]\n", "sources[0].topics: is not a key of kind folder", ""},
		{"port out of range endpoint", "upload: {endpoint: \"https://i.example.org:84433/files/\"}\n", "upload.endpoint: port 84433 is out of range (1-65535)", ""},
		{"port out of range http", "http: {listen: \"127.0.0.1:84433\"}\n", "http.listen: port 84433 is out of range", ""},
		{"port out of range broker", "mqtt: {broker: \"ssl://b.example.org:84433\"}\n", "mqtt.broker: port 84433 is out of range", ""},
		{"port out of range mllp", "sources: [{name: a, kind: mllp, listen: \"127.0.0.1:84433\"}]\n", "sources[0].listen: port 84433 is out of range", ""},
		{"mllp listen not host:port", "sources: [{name: a, kind: mllp, listen: \"2575\"}]\n", `sources[0].listen: must be host:port, e.g. 127.0.0.1:9464 or [::1]:2575, got "2575"`, ""},
		{"mllp bad cidr", "sources: [{name: a, kind: mllp, listen: \"0.0.0.0:2575\", allowed_peers: [\"10.1.2.0/33\", \"10.1.2.3\"]}]\n", `sources[0].allowed_peers[0]: not a CIDR like 10.1.2.0/24 or an address, got "10.1.2.0/33"`, ""},
		{"mllp open to the network", "sources: [{name: a, kind: mllp, listen: \"0.0.0.0:2575\"}]\n", "", "sources[0].listen: accepts HL7 from any host on the network"},
		{"mllp tls half", "sources: [{name: a, kind: mllp, listen: \"127.0.0.1:2575\", tls: {cert_file: " + file + "}}]\n", "sources[0].tls: cert_file and key_file must be set together", ""},
		{"mllp max_message 0", "sources: [{name: a, kind: mllp, listen: \"127.0.0.1:2575\", max_message: 0}]\n", "sources[0].max_message: must be > 0, got 0", ""},
		{"plain http remote", "upload: {endpoint: \"http://ingest.example.org/files/\"}\n", "upload.endpoint: http:// to ingest.example.org sends files and the token unencrypted: use https:// (or set upload.allow_insecure: true)", ""},
		{"plain http allowed", "upload: {endpoint: \"http://ingest.example.org/files/\", allow_insecure: true}\n", "", "upload.endpoint: http:// to ingest.example.org: files and the token travel unencrypted"},
		{"plain http loopback", "upload: {endpoint: \"http://127.0.0.1:8080/files/\"}\nlog: {level: loud}\n", "log.level", ""},
		{"tcp broker remote", "mqtt: {broker: \"tcp://broker.example.org:1883\"}\n", "mqtt.broker: tcp:// to broker.example.org is unencrypted", ""},
		{"ws broker remote", "mqtt: {broker: \"ws://broker.example.org:80/mqtt\"}\n", "mqtt.broker: ws:// to broker.example.org is unencrypted", ""},
		{"tcp broker allowed", "mqtt: {broker: \"tcp://broker.example.org:1883\", allow_insecure: true}\n", "", "mqtt.broker: tcp:// to broker.example.org: credentials and events travel unencrypted"},
		{"credentials in endpoint", "upload: {endpoint: \"https://agent:hunter2@i.example.org/files/\"}\n", "upload.endpoint: must not carry a user name or password in the URL (they would end up in logs): put the token in upload.bearer_token_file", ""},
		{"credentials in broker", "mqtt: {broker: \"ssl://hub:hunter2@b.example.org:8883\"}\n", "mqtt.broker: must not carry a user name or password in the URL", ""},
		{"token readable by others", "upload: {bearer_token_file: " + token + "}\n", `upload.bearer_token_file: "` + token + `" can be read or changed by group or others (mode 0644): run chmod 600 ` + token, ""},
		{"password readable by others", "mqtt: {broker: \"ssl://b.example.org:8883\", password_file: " + token + "}\n", `mqtt.password_file: "` + token + `" can be read or changed by group or others`, ""},
		{"salt readable by others", "privacy: {id_salt_file: " + token + "}\n", `privacy.id_salt_file: "` + token + `" can be read or changed by group or others`, ""},
		{"key readable by others", "upload: {tls: {client_cert: " + privateToken + ", client_key: " + token + "}}\n", `upload.tls.client_key: "` + token + `" can be read or changed`, ""},
		{"missing token", "upload: {bearer_token_file: /nonexistent/token}\n", `upload.bearer_token_file: cannot read "/nonexistent/token"`, ""},
		{"bad trusted key", "mqtt: {broker: \"ssl://b.example.org:8883\"}\nremote_config: {enabled: true, trusted_keys: [\"" + pub + "\", \"not base64!\"]}\n", "remote_config.trusted_keys[0]: not an ed25519 public key: want 32 bytes, got 44", ""},
		{"trusted key not base64", "mqtt: {broker: \"ssl://b.example.org:8883\"}\nremote_config: {enabled: true, trusted_keys: [\"not base64!\"]}\n", "remote_config.trusted_keys[0]: not base64", ""},
		{"remote config without keys", "mqtt: {broker: \"ssl://b.example.org:8883\"}\nremote_config: {enabled: true}\n", "remote_config.trusted_keys: must list at least one key", ""},
		{"remote config without broker", "remote_config: {enabled: true, trusted_keys: [\"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\"]}\n", "mqtt.broker: must be set: remote_config.enabled is true", ""},
		{"remote relative allowed path", "remote_config: {allowed_paths: [srv/lab]}\n", `remote_config.allowed_paths[0]: must be an absolute folder, got "srv/lab"`, ""},
		{"mqtt source without broker", "sources: [{name: b, kind: mqtt, topics: [\"d/+/f/#\"]}]\n", "mqtt.broker: must be set: sources[0] is kind mqtt", ""},
		{"bad topic", "mqtt: {broker: \"tcp://127.0.0.1:1883\"}\nsources: [{name: b, kind: mqtt, topics: [\"d/#/x\"]}]\n", "sources[0].topics[0]: \"d/#/x\": '#' must be a whole last level", ""},
		{"bad kind", "sources: [{name: a, kind: ftp}]\n", `sources[0].kind: must be folder, mqtt or mllp, got "ftp"`, ""},
		{"tiny chunk", "upload: {chunk_size: 1KiB}\n", "upload.chunk_size: must be at least 64KiB, got 1KiB", ""},
		{"ambiguous size", "spool: {max_bytes: 10G}\n", "", `spool.max_bytes: "10G" is read as 10GiB (binary, as before); write 10GiB or 10GB (decimal) to say which (line`},
		{"zero keep_audit", "spool: {keep_audit: 0s}\n", `spool.keep_audit: must be > 0, got "0s"`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := f.expand("agent: {id: a1, data_dir: {{DIR}}/data}\n" + tc.yaml)
			if !strings.Contains(tc.yaml, "sources") {
				doc += f.expand("sources: [{name: in, kind: folder, path: {{INBOX}}}]\n")
			}
			if strings.HasPrefix(tc.yaml, "upload: {") && !strings.Contains(tc.yaml, "endpoint") {
				doc = strings.Replace(doc, "upload: {", "upload: {endpoint: \"https://i.example.org/files/\", ", 1)
			} else if !strings.Contains(tc.yaml, "upload") {
				doc += "upload: {endpoint: \"https://i.example.org/files/\"}\n"
			}
			c, errs, warns := CheckBytes("v.yaml", []byte(doc))
			if tc.want != "" {
				if !strings.Contains(errs.Error(), "v.yaml: "+tc.want) {
					t.Errorf("errors\n%v\ndo not contain\n%s\nfor\n%s", errs, tc.want, doc)
				}
				if c != nil {
					t.Errorf("a config although there are errors")
				}
			} else if len(errs) > 0 {
				t.Errorf("unexpected errors: %v\n%s", errs, doc)
			}
			if tc.warn != "" {
				if !strings.Contains(warns.Error(), "v.yaml: "+tc.warn) {
					t.Errorf("warnings\n%v\ndo not contain\n%s", warns, tc.warn)
				}
				if c != nil && !slices.Equal(c.Warnings, warns) {
					t.Errorf("Config.Warnings %v, want %v", c.Warnings, warns)
				}
			}
			if strings.Contains(errs.Error()+warns.Error(), "hunter2") {
				t.Errorf("a password is echoed: %v", errs)
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	f := newFixture(t)
	t.Setenv("COURIER_TEST_ENDPOINT", "https://from-env.example.org/files/")
	t.Setenv("COURIER_TEST_N", "3")
	doc := f.expand("agent: {id: a, data_dir: {{DIR}}/d}\nsources: [{name: in, kind: folder, path: {{INBOX}}}]\n" +
		"upload:\n  endpoint: \"${COURIER_TEST_ENDPOINT}\"\n  concurrency: ${COURIER_TEST_N}\n# ${NOT_EXPANDED_IN_COMMENTS}\n")
	c, err := Parse("env.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upload.Concurrency != 3 || c.Upload.Endpoint != "https://from-env.example.org/files/" {
		t.Errorf("expanded: concurrency %d endpoint %q", c.Upload.Concurrency, c.Upload.Endpoint)
	}
	_, err = Parse("env.yaml", []byte(strings.Replace(doc, "id: a", `id: "${COURIER_UNSET_VAR_X}"`, 1)))
	if err == nil || !strings.Contains(err.Error(), "env.yaml: environment variable(s) not set: COURIER_UNSET_VAR_X") {
		t.Errorf("unset variable: %v", err)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]Size{
		"8MiB": 8 << 20, "10GiB": 10 << 30, "1024": 1024, "200KB": 200000, "1.5GiB": 3 << 29, "0": 0,
		"10GB": 10_000_000_000, "1 MiB": 1 << 20, "512B": 512, "10G": 10 << 30, "4K": 4096, "0.5KiB": 512,
		"8388607TiB": 8388607 << 40,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "MiB", "-1", "-x", "1.5", "1,5GiB", "1.1B", "99999999999999999999", "9999999TiB", "8XB", "1e3"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q): no error", bad)
		}
	}
	if _, w, _ := ParseSizeWarn("10G"); !strings.Contains(w, "10GiB or 10GB") {
		t.Errorf("10G warning %q", w)
	}
	if _, w, _ := ParseSizeWarn("10GiB"); w != "" {
		t.Errorf("10GiB warning %q", w)
	}
	for s, want := range map[Size]string{8 * MiB: "8MiB", 3 << 29: "1536MiB", 1000: "1000", 0: "0"} {
		if s.String() != want {
			t.Errorf("Size(%d).String() = %q, want %q", s, s.String(), want)
		}
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"2s": 2 * time.Second, "500ms": 500 * time.Millisecond, "1h30m": 90 * time.Minute, "1.5h": 90 * time.Minute,
		"7d": 7 * 24 * time.Hour, "1w": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "-2s": -2 * time.Second, "0": 0,
	} {
		got, err := ParseDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "soon", "5min", "30", "1.5d"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q): no error", bad)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "settle", Duration(5*time.Minute))
	if !strings.Contains(buf.String(), `"settle":"5m0s"`) {
		t.Errorf("slog prints %s, want settle 5m0s", buf.String())
	}
}

// The shipped examples are valid on a machine that has the files they name:
// the test makes them (0600) under a temporary root and points the examples
// there. What remains are warnings about folders that do not exist here.
func TestExampleConfigs(t *testing.T) {
	ms, _ := filepath.Glob(filepath.Join("..", "..", "configs", "*.yaml"))
	if len(ms) < 3 {
		t.Fatalf("examples: %v", ms)
	}
	root := t.TempDir()
	etc := filepath.Join(root, "etc", "courier")
	if err := os.MkdirAll(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"token", "id-salt", "mqtt-password", "broker-ca.pem", "ingest-ca.pem", "agent.crt", "agent.key"} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range ms {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			doc := strings.ReplaceAll(string(b), "/etc/courier/", etc+"/")
			_, errs, warns := CheckBytes(filepath.Base(path), []byte(doc))
			for _, e := range errs {
				t.Errorf("%v", e)
			}
			for _, w := range warns {
				if !strings.Contains(w.Problem, "does not exist") {
					t.Errorf("warning %v", w)
				}
			}
		})
	}
}

// Line numbers are the file's own, blank lines and comments included.
func TestErrorLineNumbers(t *testing.T) {
	f := newFixture(t)
	doc := f.expand("# a comment\n\nagent: {id: a1, data_dir: {{DIR}}/x}\n\nupload:\n  endpoint: https://i.example.org/files/\nsources: [{name: a, kind: folder, path: {{INBOX}}}]\n\nspool:\n  keep_done: soon\n")
	_, err := Parse("ln.yaml", []byte(doc))
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Key != "spool.keep_done" || es[0].Line != 10 || !strings.Contains(es[0].Error(), "(line 10)") {
		t.Fatalf("error %v, want spool.keep_done named with line 10", err)
	}
}

// An explicit 0 means "no limit" where the contract says so and is kept.
func TestExplicitZeroLimits(t *testing.T) {
	f := newFixture(t)
	c, err := Parse("z.yaml", []byte(f.expand("agent: {id: a1, data_dir: {{DIR}}/d}\nupload: {endpoint: \"https://i.example.org/files/\"}\nsources: [{name: in, kind: folder, path: {{INBOX}}, max_size: 0}]\nspool: {max_bytes: 0, min_free_disk: 0}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Spool.MaxBytes != 0 || c.Spool.MinFreeDisk != 0 || c.Sources[0].MaxSize != 0 {
		t.Errorf("explicit zeros replaced: %+v %d", c.Spool, c.Sources[0].MaxSize)
	}
}

func TestFilePermissionsOnlyOnUnix(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits do not describe access on Windows")
	}
	f := newFixture(t)
	tok := f.write(t, "token", "x\n", 0o600)
	doc := f.expand("agent: {id: a1, data_dir: {{DIR}}/d}\nupload: {endpoint: \"https://i.example.org/files/\", bearer_token_file: " + tok + "}\nsources: [{name: in, kind: folder, path: {{INBOX}}}]\n")
	if _, err := Parse("p.yaml", []byte(doc)); err != nil {
		t.Errorf("a 0600 token: %v", err)
	}
}
