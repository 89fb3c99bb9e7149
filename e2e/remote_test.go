package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/edgecourier/courier/internal/mosquittotest"
	"github.com/edgecourier/courier/internal/testutil"
)

// central is central IT: a signing key and the CLI.
type central struct {
	t      *testing.T
	dir    string
	key    string // PREFIX.key
	pub    string // its one base64 line
	broker *mosquittotest.Broker
}

func newCentral(t *testing.T, b *mosquittotest.Broker) *central {
	c := &central{t: t, dir: t.TempDir(), broker: b}
	c.key, c.pub = c.keygen("central")
	return c
}

func (c *central) keygen(name string) (key, pub string) {
	c.t.Helper()
	prefix := filepath.Join(c.dir, name)
	if out, code := run(c.t, "keygen", "--out", prefix); code != 0 {
		c.t.Fatalf("keygen: %s", out)
	}
	b, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		c.t.Fatal(err)
	}
	return prefix + ".key", strings.TrimSpace(string(b))
}

// sign signs a YAML document with key (central's when "").
func (c *central) sign(key, target string, version int, doc string, extra ...string) string {
	c.t.Helper()
	if key == "" {
		key = c.key
	}
	f := filepath.Join(c.dir, fmt.Sprintf("doc-%d-%d.yaml", version, time.Now().UnixNano()))
	writeText(c.t, f, doc)
	args := append([]string{"config", "sign", "--key", key, "--version", fmt.Sprint(version), "--target", target}, extra...)
	out, code := run(c.t, append(args, f)...)
	if code != 0 {
		c.t.Fatalf("config sign: %s", out)
	}
	return strings.TrimSpace(out)
}

// push publishes a JWS with `courier config push` (to the topic its target names).
func (c *central) push(jws string) {
	c.t.Helper()
	f := filepath.Join(c.dir, fmt.Sprintf("push-%d.jws", time.Now().UnixNano()))
	writeText(c.t, f, jws)
	if out, code := run(c.t, "config", "push", "--broker", c.broker.URL(), f); code != 0 {
		c.t.Fatalf("config push: %s", out)
	}
}

type fleetRow struct {
	Agent        string `json:"agent"`
	State        string `json:"state"`
	ConfigState  string `json:"config_state"`
	Version      int64  `json:"applied_version"`
	ConfigSHA256 string `json:"config_sha256"`
	Source       string `json:"source"`
	Error        string `json:"error"`
}

func (c *central) fleet() map[string]fleetRow {
	c.t.Helper()
	out, code := run(c.t, "config", "fleet", "--broker", c.broker.URL(), "--json", "--wait", "500ms")
	if code != 0 {
		c.t.Fatalf("config fleet: %s", out)
	}
	var rows []fleetRow
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &rows); err != nil {
		c.t.Fatalf("config fleet --json: %v\n%s", err, out)
	}
	m := map[string]fleetRow{}
	for _, r := range rows {
		m[r.Agent] = r
	}
	return m
}

// waitFleet polls `courier config fleet` until ok accepts the agent's row.
func (c *central) waitFleet(agent string, what string, ok func(fleetRow) bool) fleetRow {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last fleetRow
	for time.Now().Before(deadline) {
		last = c.fleet()[agent]
		if ok(last) {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("agent %s: %s: last fleet row %+v", agent, what, last)
	return last
}

func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	e := &env{t: t}
	return e.courier(args...)
}

func remoteAgent(t *testing.T, in *ingest, b *mosquittotest.Broker, c *central, id, root string) *env {
	e := newEnv(t, agentConf{Endpoint: in.url(), Extra: fmt.Sprintf(`mqtt:
  broker: %s
remote_config:
  enabled: true
  trusted_keys: [%q]
  groups: [north]
  allowed_paths: [%q, ALLOWED_INBOX]
  probation: 6s
`, b.URL(), c.pub, root)})
	cfg := strings.Replace(string(mustRead(t, e.cfgPath)), "id: e2e-agent", "id: "+id, 1)
	cfg = strings.Replace(cfg, "ALLOWED_INBOX", fmt.Sprintf("%q", e.inbox), 1)
	writeText(t, e.cfgPath, cfg)
	return e
}

// TestRemoteConfig is issue 8 as central IT lives it: sign, push, read the fleet,
// watch every bad document refused with a reason, survive a broker outage at boot,
// and see a document that breaks the link reverted on its own.
func TestRemoteConfig(t *testing.T) {
	skipOnWindows(t)
	b := mosquittotest.Start(t)
	in := startIngest(t, t.TempDir(), "")
	c := newCentral(t, b)
	root := t.TempDir()
	pushed := filepath.Join(root, "pushed")
	os.MkdirAll(pushed, 0o755)

	e := remoteAgent(t, in, b, c, "clinic-042", root)
	agent := e.startAgent()
	defer func() { agent.stop() }()
	local := c.waitFleet("clinic-042", "report the local config", func(r fleetRow) bool { return r.ConfigSHA256 != "" && r.Source == "local" })

	docWith := func(extra string) string {
		return fmt.Sprintf("sources:\n  - {name: inbox, kind: folder, path: %q, settle: 500ms, after: delete}\n  - {name: pushed, kind: folder, path: %q, settle: 300ms, after: delete}\n%s", e.inbox, pushed, extra)
	}

	// 1. A push that adds a folder: files there are verified.
	c.push(c.sign("", "agent:clinic-042", 1, docWith("")))
	applied := c.waitFleet("clinic-042", "apply version 1", func(r fleetRow) bool { return r.Version == 1 && r.ConfigState == "applied" })
	if applied.ConfigSHA256 == local.ConfigSHA256 || applied.Source != "remote" {
		t.Fatalf("after the push: %+v (local was %s)", applied, local.ConfigSHA256)
	}
	writeFile(t, filepath.Join(pushed, "report-1.pdf"), randBytes(50_000, 1))
	e.waitVerified(1, 30*time.Second)
	var statusOut string
	testutil.WaitFor(t, 20*time.Second, "courier status to show the applied config", func() bool {
		statusOut, _ = e.courier("status", "--config", e.cfgPath)
		return strings.Contains(statusOut, "config: remote, version 1, sha256 "+applied.ConfigSHA256)
	})

	// 2. Every bad document is refused with a reason; the running config stays.
	otherKey, _ := c.keygen("stolen")
	good := c.sign("", "agent:clinic-042", 7, docWith(""))
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	edited := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "300ms", "301ms", 1))) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"courier-config+jws"}`)) + "." + parts[1] + "."
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("a shared secret of thirty-two by")}, nil)
	hsObj, _ := hs.Sign(payload)
	hs256, _ := hsObj.CompactSerialize()
	expiring := c.sign("", "agent:clinic-042", 8, docWith(""), "--expires", "1s")
	time.Sleep(1500 * time.Millisecond)
	outside := t.TempDir()
	for _, tc := range []struct{ name, jws, want string }{
		{"wrong key", c.sign(otherKey, "agent:clinic-042", 2, docWith("")), "which is not in remote_config.trusted_keys"},
		{"payload edited after signing", edited, "the document was changed after signing"},
		{"wrong target", c.sign("", "agent:clinic-999", 3, docWith("")), "is not this agent"},
		{"replayed older version", c.sign("", "agent:clinic-042", 1, docWith("log: {level: warn}\n")), "is not newer than version 1"},
		{"expired", expiring, "expired at"},
		{"source outside allowed_paths", c.sign("", "agent:clinic-042", 4, fmt.Sprintf("sources:\n  - {name: x, kind: folder, path: %q}\n", outside)), "remote_config.allowed_paths"},
		{"endpoint outside allowed_endpoints", c.sign("", "agent:clinic-042", 5, "upload: {endpoint: \"http://127.0.0.1:9/files/\"}\n"), "remote_config.allowed_endpoints"},
		{"local-only key", c.sign("", "agent:clinic-042", 6, "agent: {data_dir: /tmp/elsewhere}\n"), "agent.data_dir"},
		{"does not validate", c.sign("", "agent:clinic-042", 9, "upload: {concurrency: 0}\n"), "upload.concurrency"},
		{"garbage", "this is not a jws", "not a compact JWS"},
		{"alg none", none, `algorithm "none" is not accepted`},
		{"HS256", hs256, `algorithm "HS256" is not accepted`},
	} {
		mosquittoPub(t, b, "courier/clinic-042/config", []byte(tc.jws))
		r := c.waitFleet("clinic-042", tc.name, func(r fleetRow) bool { return r.ConfigState == "rejected" && strings.Contains(r.Error, tc.want) })
		if r.ConfigSHA256 != applied.ConfigSHA256 || r.Version == 0 && r.Source != "remote" {
			t.Errorf("%s: the running config changed: %+v", tc.name, r)
		}
		t.Logf("%-36s → %s", tc.name, r.Error)
	}
	// Still flowing on version 1.
	writeFile(t, filepath.Join(pushed, "report-2.pdf"), randBytes(40_000, 2))
	e.waitVerified(2, 30*time.Second)

	// 3. A restart with the broker down comes up on last-known-good.
	agent.stop()
	b.Stop()
	agent = e.startAgent()
	writeFile(t, filepath.Join(pushed, "report-3.pdf"), randBytes(30_000, 3))
	e.waitVerified(3, 30*time.Second)
	testutilWaitLog(t, agent, "last-known-good")
	b.Restart()

	// 4. A push that points uploads at a dead endpoint is reverted within probation,
	// and files keep flowing.
	dead := "http://127.0.0.1:9/files/"
	e2 := strings.Replace(string(mustRead(t, e.cfgPath)), "probation: 6s", fmt.Sprintf("probation: 6s\n  allowed_endpoints: [%q, %q]", in.url(), dead), 1)
	writeText(t, e.cfgPath, e2)
	agent.stop()
	agent = e.startAgent()
	before := c.waitFleet("clinic-042", "reconnect", func(r fleetRow) bool { return r.Version == 1 && r.Source == "remote" })
	c.push(c.sign("", "agent:clinic-042", 10, docWith(fmt.Sprintf("upload: {endpoint: %q}\n", dead))))
	r := c.waitFleet("clinic-042", "revert version 10", func(r fleetRow) bool { return r.ConfigState == "reverted" })
	if !strings.Contains(r.Error, "version 10") || r.ConfigSHA256 != before.ConfigSHA256 {
		t.Fatalf("reverted status: %+v", r)
	}
	t.Logf("dead endpoint → reverted: %s", r.Error)
	writeFile(t, filepath.Join(pushed, "report-4.pdf"), randBytes(30_000, 4))
	e.waitVerified(4, 30*time.Second)

	// 5. A group push reaches two agents; an agent's own document overrides it.
	e3 := remoteAgent(t, in, b, c, "clinic-043", root)
	agent3 := e3.startAgent()
	defer agent3.stop()
	c.push(c.sign("", "group:north", 1, "log: {level: warn}\n"))
	g2 := c.waitFleet("clinic-043", "apply the group document", func(r fleetRow) bool { return r.ConfigState == "applied" && r.Source == "remote" })
	g1 := c.waitFleet("clinic-042", "apply the group document under its own", func(r fleetRow) bool { return r.ConfigState == "applied" && r.ConfigSHA256 != applied.ConfigSHA256 })
	if g1.Version != 10 && g1.Version != 1 {
		t.Logf("clinic-042 after the group push: %+v", g1)
	}
	c.push(c.sign("", "agent:clinic-043", 1, "log: {level: error}\n"))
	o := c.waitFleet("clinic-043", "apply its own document", func(r fleetRow) bool { return r.ConfigSHA256 != g2.ConfigSHA256 && r.ConfigState == "applied" })
	t.Logf("group north: clinic-043 %s, then its own document %s", g2.ConfigSHA256[:12], o.ConfigSHA256[:12])
	out, _ := run(t, "config", "fleet", "--broker", b.URL())
	t.Logf("courier config fleet:\n%s", out)
}

func testutilWaitLog(t *testing.T, p *proc, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), s) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%q not in the log:\n%s", s, tail(p.out.String(), 3000))
}
