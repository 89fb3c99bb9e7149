package main

// Central IT's side of remote configuration: keygen, config sign, config push and
// config fleet. The agent's side lives in agent (remote.go) and agent/remoteconfig.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"

	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/edgecourier/courier/agent/mqtt"
	"github.com/edgecourier/courier/agent/remoteconfig"
)

func cmdKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("keygen", stderr)
	out := fs.String("out", "", "path prefix: writes PREFIX.key (private, 0600) and PREFIX.pub")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if *out == "" || fs.NArg() != 0 {
		return usageErr(stderr, "keygen: want --out PREFIX")
	}
	pub, kid, err := remoteconfig.Keygen(*out)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	fmt.Fprintf(stdout, "wrote %s.key (keep it offline, 0600) and %s.pub (key id %s)\nadd to remote_config.trusted_keys of the agents:\n  - %s\n", *out, *out, kid, pub)
	return 0
}

// cmdConfigRemote handles `config sign|push|fleet`.
func cmdConfigRemote(args []string, stdout, stderr io.Writer) int {
	switch args[0] {
	case "sign":
		return cmdConfigSign(args[1:], stdout, stderr)
	case "push":
		return cmdConfigPush(args[1:], stdout, stderr)
	case "fleet":
		return cmdConfigFleet(args[1:], stdout, stderr)
	}
	return usageErr(stderr, "config: unknown sub-command %q", args[0])
}

func cmdConfigSign(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config sign", stderr)
	keyPath := fs.String("key", "", "PREFIX.key from `courier keygen`")
	version := fs.Int64("version", 0, "document version; agents apply only a higher one than they run")
	target := fs.String("target", "", "agent:ID or group:NAME")
	expires := fs.String("expires", "", "optional lifetime, e.g. 720h or 30d")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if *keyPath == "" || *version <= 0 || *target == "" || len(pos) != 1 {
		return usageErr(stderr, "config sign: want --key PREFIX.key --version N --target agent:ID|group:G [--expires D] FILE")
	}
	if _, err := remoteconfig.ParseTarget(*target); err != nil {
		return usageErr(stderr, "config sign: --target: %v", err)
	}
	body, err := os.ReadFile(pos[0])
	if err != nil {
		return fail(stderr, "config sign: %v", err)
	}
	cfgJSON, err := documentJSON(body)
	if err != nil {
		return usageErr(stderr, "config sign: %s: %v", pos[0], err)
	}
	key, err := remoteconfig.LoadPrivateKey(*keyPath)
	if err != nil {
		return fail(stderr, "config sign: %v", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	doc := remoteconfig.Document{Version: *version, IssuedAt: now, Target: *target, Config: cfgJSON}
	if *expires != "" {
		d, err := model.ParseDuration(*expires)
		if err != nil || d <= 0 {
			return usageErr(stderr, "config sign: --expires: want a duration like 720h or 30d, got %q", *expires)
		}
		at := now.Add(time.Duration(d))
		doc.ExpiresAt = &at
	}
	jws, err := remoteconfig.Sign(key, doc)
	if err != nil {
		return fail(stderr, "config sign: %v", err)
	}
	fmt.Fprintln(stdout, jws)
	return 0
}

// documentJSON turns a YAML or JSON config file into the JSON object a document carries.
func documentJSON(b []byte) (json.RawMessage, error) {
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("want a mapping of config keys (sources, upload, …) at the top")
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cannot be JSON: %v", err)
	}
	return out, nil
}

// brokerFlags are the connection flags of push and fleet, named like the agent's mqtt block.
type brokerFlags struct {
	broker, username, passwordFile, caFile, clientCert, clientKey *string
	allowInsecure                                                 *bool
}

func addBrokerFlags(fs *flag.FlagSet) brokerFlags {
	return brokerFlags{
		broker:        fs.String("broker", "", "tcp://host:1883 or ssl://host:8883"),
		username:      fs.String("username", "", "broker user name"),
		passwordFile:  fs.String("password-file", "", "file holding the broker password"),
		caFile:        fs.String("ca-file", "", "PEM bundle to verify an ssl:// broker"),
		clientCert:    fs.String("client-cert", "", "PEM client certificate"),
		clientKey:     fs.String("client-key", "", "PEM client key"),
		allowInsecure: fs.Bool("allow-insecure", false, "allow tcp:// to a non-loopback broker"),
	}
}

func (b brokerFlags) connect(ctx context.Context, name string) (*mqtt.Conn, error) {
	if *b.broker == "" {
		return nil, errors.New("--broker is required")
	}
	u, err := url.Parse(*b.broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--broker: want tcp://host:port or ssl://host:port")
	}
	if u.User != nil {
		return nil, errors.New("--broker: credentials in the URL are refused; use --username and --password-file")
	}
	if (u.Scheme == "tcp" || u.Scheme == "mqtt") && !*b.allowInsecure && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("--broker: plain tcp:// to %s sends configuration unencrypted; use ssl:// or --allow-insecure", u.Hostname())
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	c, err := mqtt.New(mqtt.Options{
		Broker: *b.broker, ClientID: name + "-" + hex.EncodeToString(rnd[:]), Username: *b.username, PasswordFile: *b.passwordFile,
		TLS:     mqtt.TLSOptions{CAFile: *b.caFile, ClientCert: *b.clientCert, ClientKey: *b.clientKey},
		AgentID: "cli", Transient: true, MaxReconnectInterval: 2 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func cmdConfigPush(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config push", stderr)
	bf := addBrokerFlags(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(pos) != 1 {
		return usageErr(stderr, "config push: want --broker URL FILE (a JWS from `courier config sign`)")
	}
	b, err := os.ReadFile(pos[0])
	if err != nil {
		return fail(stderr, "config push: %v", err)
	}
	jws := strings.TrimSpace(string(b))
	// Read the target without verifying: the agents verify; we only need the topic.
	doc, err := unverifiedDocument(jws)
	if err != nil {
		return usageErr(stderr, "config push: %s: %v", pos[0], err)
	}
	t, err := remoteconfig.ParseTarget(doc.Target)
	if err != nil {
		return usageErr(stderr, "config push: %s: %v", pos[0], err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := bf.connect(ctx, "courier-push")
	if err != nil {
		return usageErr(stderr, "config push: %v", err)
	}
	if err := c.Start(ctx); err != nil {
		return fail(stderr, "config push: %v", err)
	}
	defer c.Close()
	if err := c.WaitConnected(ctx); err != nil {
		return fail(stderr, "config push: broker %s not reachable: %v", redactBroker(*bf.broker), c.LastError())
	}
	if err := c.Publish(ctx, t.Topic(), true, []byte(jws)); err != nil {
		return fail(stderr, "config push: publish to %s: %v", t.Topic(), err)
	}
	fmt.Fprintf(stdout, "pushed version %d for %s to %s (retained)\n", doc.Version, doc.Target, t.Topic())
	return 0
}

func unverifiedDocument(jws string) (*remoteconfig.Document, error) {
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	p, err := decodeB64URL(parts[1])
	if err != nil {
		return nil, errors.New("not a compact JWS: payload is not base64url")
	}
	var d remoteconfig.Document
	if err := json.Unmarshal(p, &d); err != nil {
		return nil, fmt.Errorf("payload is not a configuration document: %v", err)
	}
	return &d, nil
}

func redactBroker(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	u.User = nil
	return u.String()
}

// fleetRow is one agent as its retained messages describe it.
type fleetRow struct {
	Agent         string           `json:"agent"`
	State         string           `json:"state"`
	ConfigState   string           `json:"config_state,omitempty"`
	Version       int64            `json:"applied_version"`
	ConfigSHA256  string           `json:"config_sha256,omitempty"`
	Source        string           `json:"source,omitempty"`
	Error         string           `json:"error,omitempty"`
	LastSeen      string           `json:"last_seen,omitempty"`
	Applied       map[string]int64 `json:"applied,omitempty"`
	StatusPayload json.RawMessage  `json:"status,omitempty"`
}

func cmdConfigFleet(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config fleet", stderr)
	bf := addBrokerFlags(fs)
	asJSON := fs.Bool("json", false, "one JSON array")
	wait := fs.Duration("wait", 2*time.Second, "how long to collect retained messages")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait+15*time.Second)
	defer cancel()
	c, err := bf.connect(ctx, "courier-fleet")
	if err != nil {
		return usageErr(stderr, "config fleet: %v", err)
	}
	var mu sync.Mutex
	rows := map[string]*fleetRow{}
	row := func(id string) *fleetRow {
		if rows[id] == nil {
			rows[id] = &fleetRow{Agent: id, State: "unknown"}
		}
		return rows[id]
	}
	c.Subscribe([]string{"courier/+/status", "courier/+/config/status"}, func(_ context.Context, topic string, payload []byte) {
		levels := strings.Split(topic, "/")
		if len(levels) < 3 || levels[1] == "groups" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		r := row(levels[1])
		if len(levels) == 3 { // courier/<id>/status
			var st struct {
				State string `json:"state"`
				At    string `json:"at"`
				Time  string `json:"time"`
			}
			json.Unmarshal(payload, &st)
			if st.State != "" {
				r.State = st.State
			}
			if st.At != "" {
				r.LastSeen = st.At
			} else if st.Time != "" {
				r.LastSeen = st.Time
			}
			r.StatusPayload = append(json.RawMessage(nil), payload...)
			return
		}
		var cs remoteconfig.Status
		if json.Unmarshal(payload, &cs) == nil {
			r.ConfigState, r.Version, r.ConfigSHA256, r.Source, r.Error, r.Applied = cs.State, cs.Version, cs.ConfigSHA256, cs.Source, cs.Error, cs.Applied
			if r.LastSeen == "" && !cs.At.IsZero() {
				r.LastSeen = cs.At.UTC().Format(time.RFC3339)
			}
		}
	})
	if err := c.Start(ctx); err != nil {
		return fail(stderr, "config fleet: %v", err)
	}
	defer c.Close()
	if err := c.WaitConnected(ctx); err != nil {
		return fail(stderr, "config fleet: broker %s not reachable: %v", redactBroker(*bf.broker), c.LastError())
	}
	select { // retained messages arrive right after SUBACK
	case <-time.After(*wait):
	case <-ctx.Done():
	}
	mu.Lock()
	out := make([]*fleetRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, r)
	}
	mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Agent < out[j].Agent })
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tSTATE\tCONFIG\tAPPLIED\tCONFIG SHA256\tSOURCE\tLAST SEEN\tERROR")
	for _, r := range out {
		sha := r.ConfigSHA256
		if len(sha) > 12 {
			sha = sha[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Agent, r.State, dash(r.ConfigState), r.Version, dash(sha), dash(r.Source), dash(r.LastSeen), r.Error)
	}
	tw.Flush()
	if len(out) == 0 {
		fmt.Fprintln(stderr, "courier: config fleet: no agent has published a status on this broker")
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func decodeB64URL(s string) ([]byte, error) {
	return base64RawURL.DecodeString(s)
}

var base64RawURL = base64.RawURLEncoding
