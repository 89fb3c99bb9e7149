// Package config loads and validates Courier's YAML configuration (CONTRACT.md,
// "Configuration"). It owns the defaults and the error messages that name the
// file, the key and the problem; it knows nothing about the components it configures.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	Agent        Agent        `yaml:"agent" json:"agent"`
	Upload       Upload       `yaml:"upload" json:"upload"`
	Spool        Spool        `yaml:"spool" json:"spool"`
	Sources      []Source     `yaml:"sources" json:"sources"`
	Events       Events       `yaml:"events" json:"events"`
	MQTT         MQTT         `yaml:"mqtt" json:"mqtt"`
	RemoteConfig RemoteConfig `yaml:"remote_config" json:"remote_config"`
	Privacy      Privacy      `yaml:"privacy" json:"privacy"`
	HTTP         HTTP         `yaml:"http" json:"http"`
	Log          Log          `yaml:"log" json:"log"`

	// File is where the config was read from ("" when built in code).
	File string `yaml:"-" json:"-"`
	// set holds the keys the file wrote, so an explicit 0 ("no limit") is kept.
	set map[string]bool
}

type Agent struct {
	ID      string `yaml:"id" json:"id"`
	DataDir string `yaml:"data_dir" json:"data_dir"`
}

type TLS struct {
	CAFile     string `yaml:"ca_file" json:"ca_file"`
	ClientCert string `yaml:"client_cert" json:"client_cert"`
	ClientKey  string `yaml:"client_key" json:"client_key"`
}

type Retry struct {
	Initial     Duration `yaml:"initial" json:"initial"`
	Max         Duration `yaml:"max" json:"max"`
	MaxAttempts int      `yaml:"max_attempts" json:"max_attempts"`
}

type Upload struct {
	Endpoint            string `yaml:"endpoint" json:"endpoint"`
	ChunkSize           Size   `yaml:"chunk_size" json:"chunk_size"`
	Concurrency         int    `yaml:"concurrency" json:"concurrency"`
	BandwidthLimit      Size   `yaml:"bandwidth_limit" json:"bandwidth_limit"`
	RequireVerification *bool  `yaml:"require_verification" json:"require_verification"`
	Retry               Retry  `yaml:"retry" json:"retry"`
	TLS                 TLS    `yaml:"tls" json:"tls"`
	BearerTokenFile     string `yaml:"bearer_token_file" json:"bearer_token_file"`
}

type Spool struct {
	MaxBytes    Size     `yaml:"max_bytes" json:"max_bytes"`
	MinFreeDisk Size     `yaml:"min_free_disk" json:"min_free_disk"`
	KeepDone    Duration `yaml:"keep_done" json:"keep_done"`
}

type Source struct {
	Name     string   `yaml:"name" json:"name"`
	Kind     string   `yaml:"kind" json:"kind"`
	Path     string   `yaml:"path" json:"path,omitempty"`
	Include  []string `yaml:"include" json:"include,omitempty"`
	Exclude  []string `yaml:"exclude" json:"exclude,omitempty"`
	Settle   Duration `yaml:"settle" json:"settle,omitempty"`
	Rescan   Duration `yaml:"rescan" json:"rescan,omitempty"`
	After    string   `yaml:"after" json:"after,omitempty"`
	MaxSize  Size     `yaml:"max_size" json:"max_size,omitempty"`
	Priority string   `yaml:"priority" json:"priority,omitempty"`
	HL7      string   `yaml:"hl7" json:"hl7,omitempty"`
	// kind: mqtt
	Topics     []string `yaml:"topics" json:"topics,omitempty"`
	QoS        *int     `yaml:"qos" json:"qos,omitempty"`
	MaxPayload Size     `yaml:"max_payload" json:"max_payload,omitempty"`
	// kind: mllp
	Listen       string    `yaml:"listen" json:"listen,omitempty"`
	TLS          ServerTLS `yaml:"tls" json:"tls,omitempty"`
	AllowedPeers []string  `yaml:"allowed_peers" json:"allowed_peers,omitempty"`
	MaxMessage   Size      `yaml:"max_message" json:"max_message,omitempty"`
}

// ServerTLS is a listener's TLS (an mllp source): its certificate and key and,
// for mutual TLS, the CA that clients' certificates must chain to.
type ServerTLS struct {
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	ClientCA string `yaml:"client_ca" json:"client_ca"`
}

type Events struct {
	// MQTT defaults to on when mqtt.broker is set: an agent that has a broker
	// announces its files there unless told not to.
	MQTT *bool  `yaml:"mqtt" json:"mqtt"`
	File string `yaml:"file" json:"file"`
}

type MQTT struct {
	Broker       string `yaml:"broker" json:"broker"`
	Username     string `yaml:"username" json:"username"`
	PasswordFile string `yaml:"password_file" json:"password_file"`
	TLS          TLS    `yaml:"tls" json:"tls"`
}

type RemoteConfig struct {
	Enabled     bool     `yaml:"enabled" json:"enabled"`
	TrustedKeys []string `yaml:"trusted_keys" json:"trusted_keys"`
	Groups      []string `yaml:"groups" json:"groups"`
}

type Privacy struct {
	SendFilenames bool   `yaml:"send_filenames" json:"send_filenames"`
	IDSaltFile    string `yaml:"id_salt_file" json:"id_salt_file"`
}

type HTTP struct {
	Listen string `yaml:"listen" json:"listen"`
}

type Log struct {
	Level  string `yaml:"level" json:"level"`
	Format string `yaml:"format" json:"format"`
}

// Error is a configuration problem: which file, which key, what is wrong.
type Error struct {
	File    string
	Key     string
	Problem string
}

func (e *Error) Error() string {
	where := e.File
	if where == "" {
		where = "config"
	}
	if e.Key == "" {
		return where + ": " + e.Problem
	}
	return where + ": " + e.Key + ": " + e.Problem
}

// Errors is every problem found, in key order.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// DefaultPath is the platform's default config file.
func DefaultPath() string {
	if runtime.GOOS == "windows" {
		return filepath.Join(programData(), "Courier", "courier.yaml")
	}
	return "/etc/courier/courier.yaml"
}

// DefaultDataDir is the platform's default spool directory.
func DefaultDataDir() string {
	if runtime.GOOS == "windows" {
		return filepath.Join(programData(), "Courier", "data")
	}
	return "/var/lib/courier"
}

func programData() string {
	if d := os.Getenv("ProgramData"); d != "" {
		return d
	}
	return `C:\ProgramData`
}

// Load reads, expands ${ENV}, decodes (unknown keys are errors), applies defaults
// and validates the file at path. Every error is an *Error or Errors naming path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Problem: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	return Parse(path, b)
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Parse is Load for bytes already read; name is used in errors. ${ENV}
// references are expanded in values only (comments may mention them freely).
func Parse(name string, b []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, &Error{File: name, Problem: yamlProblem(err)}
	}
	var missing []string
	expandEnv(&root, &missing)
	if len(missing) > 0 {
		return nil, &Error{File: name, Problem: "environment variable(s) not set: " + strings.Join(missing, ", ")}
	}
	var c Config
	if len(root.Content) > 0 {
		doc := root.Content[0]
		keys := map[int]string{} // line → key path, to name the key in decoding errors
		c.set = map[string]bool{}
		if es := checkKeys(name, doc, reflect.TypeOf(c), "", keys, c.set); len(es) > 0 {
			return nil, es
		}
		// Decoding the node tree keeps the file's own line numbers.
		if err := doc.Decode(&c); err != nil {
			return nil, decodeErrors(name, err, keys)
		}
	}
	c.File = name
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func expandEnv(n *yaml.Node, missing *[]string) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			k := m[2 : len(m)-1]
			v, ok := os.LookupEnv(k)
			if !ok {
				*missing = append(*missing, k)
			}
			return v
		})
		if n.Style == 0 {
			n.Tag = "" // re-resolve: ${N} may stand for a number
		}
	}
	for _, c := range n.Content {
		expandEnv(c, missing)
	}
}

// checkKeys reports keys the configuration does not know, by their full path,
// and records which key each value line belongs to.
func checkKeys(file string, n *yaml.Node, t reflect.Type, path string, keys map[int]string, set map[string]bool) Errors {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if path != "" {
		keys[n.Line] = path
		set[path] = true
	}
	var es Errors
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if tag != "" && tag != "-" {
				fields[tag] = t.Field(i).Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := k.Value
			if path != "" {
				key = path + "." + k.Value
			}
			ft, ok := fields[k.Value]
			if !ok {
				es = append(es, &Error{File: file, Key: key, Problem: fmt.Sprintf("unknown key (line %d)", k.Line)})
				continue
			}
			es = append(es, checkKeys(file, v, ft, key, keys, set)...)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, v := range n.Content {
			es = append(es, checkKeys(file, v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), keys, set)...)
		}
	}
	return es
}

var lineRef = regexp.MustCompile(`^line (\d+): `)

// decodeErrors turns "line 17: bad duration" into "spool.keep_done: bad duration (line 17)".
func decodeErrors(file string, err error, keys map[int]string) error {
	var te *yaml.TypeError
	msgs := []string{yamlProblem(err)}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var es Errors
	for _, m := range msgs {
		e := &Error{File: file, Problem: m}
		if sm := lineRef.FindStringSubmatch(m); sm != nil {
			line, _ := strconv.Atoi(sm[1])
			if k, ok := keys[line]; ok {
				e.Key = k
				e.Problem = strings.TrimPrefix(m, sm[0]) + " (line " + sm[1] + ")"
			}
		}
		es = append(es, e)
	}
	return es
}

func yamlProblem(err error) string {
	s := err.Error()
	if s == "EOF" {
		return "empty file"
	}
	return strings.TrimPrefix(s, "yaml: ")
}

// ApplyDefaults fills every unset key with the contract's default.
func (c *Config) ApplyDefaults() {
	if c.Agent.ID == "" {
		h, _ := os.Hostname()
		c.Agent.ID = h
	}
	if c.Agent.DataDir == "" {
		c.Agent.DataDir = DefaultDataDir()
	}
	u := &c.Upload
	if u.ChunkSize == 0 {
		u.ChunkSize = 8 * MiB
	}
	if u.Concurrency == 0 {
		u.Concurrency = 4
	}
	if u.RequireVerification == nil {
		t := true
		u.RequireVerification = &t
	}
	if u.Retry.Initial == 0 {
		u.Retry.Initial = Duration(time.Second)
	}
	if u.Retry.Max == 0 {
		u.Retry.Max = Duration(5 * time.Minute)
	}
	if u.Retry.MaxAttempts == 0 {
		u.Retry.MaxAttempts = 30
	}
	// 0 written in the file means "no limit"; only a missing key gets the default.
	if c.Spool.MaxBytes == 0 && !c.set["spool.max_bytes"] {
		c.Spool.MaxBytes = 10 * GiB
	}
	if c.Spool.MinFreeDisk == 0 && !c.set["spool.min_free_disk"] {
		c.Spool.MinFreeDisk = 1 * GiB
	}
	if c.Spool.KeepDone == 0 {
		c.Spool.KeepDone = Duration(168 * time.Hour)
	}
	for i := range c.Sources {
		s := &c.Sources[i]
		if s.Priority == "" {
			s.Priority = "normal"
		}
		switch s.Kind {
		case "folder":
			if len(s.Include) == 0 {
				s.Include = []string{"*"}
			}
			if s.Exclude == nil {
				s.Exclude = []string{"*.tmp", "*.part", "~*", ".*"}
			}
			if s.Settle == 0 {
				s.Settle = Duration(2 * time.Second)
			}
			if s.Rescan == 0 {
				s.Rescan = Duration(30 * time.Second)
			}
			if s.After == "" {
				s.After = "delete"
			}
			if s.MaxSize == 0 {
				s.MaxSize = 2 * GiB
			}
			if s.HL7 == "" {
				s.HL7 = "auto"
			}
		case "mqtt":
			if s.QoS == nil {
				q := 1
				s.QoS = &q
			}
			if s.MaxPayload == 0 {
				s.MaxPayload = 64 * MiB
			}
			if s.HL7 == "" {
				s.HL7 = "auto"
			}
		case "mllp":
			if s.MaxMessage == 0 {
				s.MaxMessage = 16 * MiB
			}
			if s.HL7 == "" {
				s.HL7 = "auto"
			}
		}
	}
	if c.Events.MQTT == nil {
		on := c.MQTT.Broker != ""
		c.Events.MQTT = &on
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9464"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
}

// Validate checks every key and returns all problems at once (Errors).
func (c *Config) Validate() error {
	var es Errors
	bad := func(key, format string, args ...any) {
		es = append(es, &Error{File: c.File, Key: key, Problem: fmt.Sprintf(format, args...)})
	}
	if c.Agent.ID == "" {
		bad("agent.id", "must be set (no hostname available)")
	} else if strings.ContainsAny(c.Agent.ID, "/+#\x00 ") {
		bad("agent.id", "must not contain '/', '+', '#' or spaces (it is an MQTT topic level), got %q", c.Agent.ID)
	}
	if c.Agent.DataDir == "" {
		bad("agent.data_dir", "must be set")
	}
	if c.Upload.Endpoint == "" {
		bad("upload.endpoint", "must be set to the courier-ingest URL, e.g. https://ingest.example.org/files/")
	} else if u, err := url.Parse(c.Upload.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("upload.endpoint", "must be an http:// or https:// URL, got %q", c.Upload.Endpoint)
	}
	if c.Upload.ChunkSize < 64*KiB {
		bad("upload.chunk_size", "must be at least 64KiB, got %s", c.Upload.ChunkSize)
	}
	if c.Upload.Concurrency < 1 || c.Upload.Concurrency > 64 {
		bad("upload.concurrency", "must be between 1 and 64, got %d", c.Upload.Concurrency)
	}
	if c.Upload.BandwidthLimit < 0 {
		bad("upload.bandwidth_limit", "must be >= 0, got %d", c.Upload.BandwidthLimit)
	}
	if c.Upload.Retry.Initial <= 0 {
		bad("upload.retry.initial", "must be > 0, got %s", c.Upload.Retry.Initial)
	}
	if c.Upload.Retry.Max < c.Upload.Retry.Initial {
		bad("upload.retry.max", "must be >= upload.retry.initial (%s), got %s", c.Upload.Retry.Initial, c.Upload.Retry.Max)
	}
	if c.Upload.Retry.MaxAttempts < 1 {
		bad("upload.retry.max_attempts", "must be >= 1, got %d", c.Upload.Retry.MaxAttempts)
	}
	checkTLS(bad, "upload.tls", c.Upload.TLS)
	checkFile(bad, "upload.bearer_token_file", c.Upload.BearerTokenFile)
	if c.Spool.MaxBytes < 0 {
		bad("spool.max_bytes", "must be >= 0, got %d", c.Spool.MaxBytes)
	}
	if c.Spool.MinFreeDisk < 0 {
		bad("spool.min_free_disk", "must be >= 0, got %d", c.Spool.MinFreeDisk)
	}
	if c.Spool.KeepDone <= 0 {
		bad("spool.keep_done", "must be > 0, got %s", c.Spool.KeepDone)
	}
	names := map[string]int{}
	needMQTT := *c.Events.MQTT
	for i, s := range c.Sources {
		key := fmt.Sprintf("sources[%d]", i)
		if s.Name == "" {
			bad(key+".name", "must be set")
		} else if j, dup := names[s.Name]; dup {
			bad(key+".name", "%q is already the name of sources[%d]", s.Name, j)
		} else {
			names[s.Name] = i
		}
		switch s.Priority {
		case "high", "normal", "low":
		default:
			bad(key+".priority", "must be one of high, normal, low, got %q", s.Priority)
		}
		switch s.HL7 {
		case "auto", "off":
		default:
			bad(key+".hl7", "must be auto or off, got %q", s.HL7)
		}
		switch s.Kind {
		case "folder":
			if s.Path == "" {
				bad(key+".path", "must be set for kind folder")
			} else if fi, err := os.Stat(s.Path); err == nil && !fi.IsDir() {
				// A folder that does not exist yet is fine (a share mounted later).
				bad(key+".path", "%q is a file, not a folder", s.Path)
			}
			for j, p := range append(append([]string{}, s.Include...), s.Exclude...) {
				if _, err := filepath.Match(p, "x"); err != nil {
					bad(fmt.Sprintf("%s.include/exclude[%d]", key, j), "bad pattern %q: %v", p, err)
				}
			}
			if s.Settle <= 0 {
				bad(key+".settle", "must be > 0, got %q", s.Settle.String())
			}
			if s.Rescan <= 0 {
				bad(key+".rescan", "must be > 0, got %q", s.Rescan.String())
			}
			switch {
			case s.After == "delete", s.After == "keep":
			case strings.HasPrefix(s.After, "move:") && len(s.After) > len("move:"):
			default:
				bad(key+".after", `must be delete, keep or move:DIR, got %q`, s.After)
			}
			if s.MaxSize < 0 {
				bad(key+".max_size", "must be >= 0, got %d", s.MaxSize)
			}
		case "mqtt":
			needMQTT = true
			if len(s.Topics) == 0 {
				bad(key+".topics", "must list at least one topic filter")
			}
			for j, t := range s.Topics {
				if err := checkTopicFilter(t); err != nil {
					bad(fmt.Sprintf("%s.topics[%d]", key, j), "%v", err)
				}
			}
			if *s.QoS != 1 {
				bad(key+".qos", "must be 1 (at-least-once; nothing is acknowledged before it is spooled), got %d", *s.QoS)
			}
			if s.MaxPayload <= 0 {
				bad(key+".max_payload", "must be > 0, got %d", s.MaxPayload)
			}
		case "mllp":
			if s.Listen == "" {
				bad(key+".listen", "must be set for kind mllp, e.g. 0.0.0.0:2575")
			} else if _, port, err := net.SplitHostPort(s.Listen); err != nil {
				bad(key+".listen", "must be HOST:PORT, e.g. 0.0.0.0:2575, got %q", s.Listen)
			} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				bad(key+".listen", "port must be 1-65535, got %q", port)
			}
			for j, p := range s.AllowedPeers {
				if _, err := netip.ParsePrefix(p); err != nil {
					if _, err := netip.ParseAddr(p); err != nil {
						bad(fmt.Sprintf("%s.allowed_peers[%d]", key, j), "must be a CIDR like 10.1.0.0/16 or an address, got %q", p)
					}
				}
			}
			if s.MaxMessage <= 0 {
				bad(key+".max_message", "must be > 0, got %d", s.MaxMessage)
			}
			checkFile(bad, key+".tls.cert_file", s.TLS.CertFile)
			checkFile(bad, key+".tls.key_file", s.TLS.KeyFile)
			checkFile(bad, key+".tls.client_ca", s.TLS.ClientCA)
			if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
				bad(key+".tls", "cert_file and key_file must be set together")
			}
			if s.TLS.ClientCA != "" && s.TLS.CertFile == "" {
				bad(key+".tls.client_ca", "needs cert_file and key_file (mutual TLS is TLS first)")
			}
		case "":
			bad(key+".kind", "must be set to folder, mqtt or mllp")
		default:
			bad(key+".kind", "must be folder, mqtt or mllp, got %q", s.Kind)
		}
	}
	if needMQTT || c.RemoteConfig.Enabled {
		if c.MQTT.Broker == "" {
			bad("mqtt.broker", "must be set when events.mqtt, an mqtt source or remote_config is on")
		}
	}
	if c.MQTT.Broker != "" {
		u, err := url.Parse(c.MQTT.Broker)
		if err != nil || u.Host == "" {
			bad("mqtt.broker", "must be a URL like tcp://host:1883 or ssl://host:8883, got %q", c.MQTT.Broker)
		} else {
			switch u.Scheme {
			case "tcp", "ssl", "tls", "mqtt", "mqtts":
			default:
				bad("mqtt.broker", "scheme must be tcp or ssl, got %q", u.Scheme)
			}
		}
	}
	checkFile(bad, "mqtt.password_file", c.MQTT.PasswordFile)
	checkTLS(bad, "mqtt.tls", c.MQTT.TLS)
	if c.RemoteConfig.Enabled && len(c.RemoteConfig.TrustedKeys) == 0 {
		bad("remote_config.trusted_keys", "must list at least one key when remote_config.enabled is true")
	}
	checkFile(bad, "privacy.id_salt_file", c.Privacy.IDSaltFile)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	if len(es) > 0 {
		return es
	}
	return nil
}

func checkTLS(bad func(string, string, ...any), key string, t TLS) {
	checkFile(bad, key+".ca_file", t.CAFile)
	checkFile(bad, key+".client_cert", t.ClientCert)
	checkFile(bad, key+".client_key", t.ClientKey)
	if (t.ClientCert == "") != (t.ClientKey == "") {
		bad(key, "client_cert and client_key must be set together")
	}
}

func checkFile(bad func(string, string, ...any), key, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		bad(key, "cannot read %q: %v", path, errors.Unwrap(err))
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
