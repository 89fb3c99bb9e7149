package config

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/edgecourier/courier/agent/folder"
	"github.com/edgecourier/courier/agent/mllp"
	"github.com/edgecourier/courier/agent/mqtt"
	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file (CONTRACT.md, "Configuration"). The
// yaml tags are the keys of the file; the json tags the keys of a pushed
// document and of the digest.
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
	// Warnings are the problems that do not stop the agent (a watched folder
	// that does not exist yet, ...). Load fills them in; the agent should log
	// them at start, `courier config validate` prints them.
	Warnings Errors `yaml:"-" json:"-"`

	// set holds the keys the file wrote, so an explicit 0 is kept (and refused
	// where 0 makes no sense) while a missing key gets the default.
	set map[string]bool
	// doc is the decoded document (after ${ENV} expansion), kept for Overlay.
	doc *yaml.Node
	// local is the local file's configuration an Overlay result was made from
	// (nil for the local file itself): the local limits always refer to it.
	local *Config
}

type Agent struct {
	ID      string `yaml:"id" json:"id"`
	DataDir string `yaml:"data_dir" json:"data_dir"`
}

// TLS is a client's TLS: upload.tls and mqtt.tls.
type TLS struct {
	CAFile     string `yaml:"ca_file" json:"ca_file"`
	ClientCert string `yaml:"client_cert" json:"client_cert"`
	ClientKey  string `yaml:"client_key" json:"client_key"`
}

// ServerTLS is a listener's TLS: sources[i].tls of an MLLP source.
type ServerTLS struct {
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	ClientCA string `yaml:"client_ca" json:"client_ca"` // set: clients must present a certificate it signed
}

// Enabled says whether TLS is configured.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

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
	// AllowInsecure permits http:// to a host that is not loopback.
	AllowInsecure bool `yaml:"allow_insecure" json:"allow_insecure"`
}

type Spool struct {
	MaxBytes    Size     `yaml:"max_bytes" json:"max_bytes"`
	MinFreeDisk Size     `yaml:"min_free_disk" json:"min_free_disk"`
	KeepDone    Duration `yaml:"keep_done" json:"keep_done"`
	KeepAudit   Duration `yaml:"keep_audit" json:"keep_audit"`
}

// Source is one entry of sources. Which keys apply depends on Kind (kindKeys).
type Source struct {
	Name     string `yaml:"name" json:"name"`
	Kind     string `yaml:"kind" json:"kind"`
	Priority string `yaml:"priority" json:"priority,omitempty"`
	HL7      string `yaml:"hl7" json:"hl7,omitempty"`
	// kind: folder
	Path    string   `yaml:"path" json:"path,omitempty"`
	Include []string `yaml:"include" json:"include,omitempty"`
	Exclude []string `yaml:"exclude" json:"exclude,omitempty"`
	Settle  Duration `yaml:"settle" json:"settle,omitempty"`
	Rescan  Duration `yaml:"rescan" json:"rescan,omitempty"`
	After   string   `yaml:"after" json:"after,omitempty"`
	MaxSize Size     `yaml:"max_size" json:"max_size,omitempty"`
	// kind: mqtt
	Topics     []string `yaml:"topics" json:"topics,omitempty"`
	QoS        *int     `yaml:"qos" json:"qos,omitempty"`
	MaxPayload Size     `yaml:"max_payload" json:"max_payload,omitempty"`
	// kind: mllp
	Listen       string    `yaml:"listen" json:"listen,omitempty"`
	TLS          ServerTLS `yaml:"tls" json:"tls,omitzero"`
	AllowedPeers []string  `yaml:"allowed_peers" json:"allowed_peers,omitempty"` // CIDRs; empty = any
	MaxMessage   Size      `yaml:"max_message" json:"max_message,omitempty"`
}

// Source kinds.
const (
	KindFolder = "folder"
	KindMQTT   = "mqtt"
	KindMLLP   = "mllp"
)

// kindKeys are the keys each kind of source accepts.
var kindKeys = map[string][]string{
	KindFolder: {"name", "kind", "priority", "hl7", "path", "include", "exclude", "settle", "rescan", "after", "max_size"},
	KindMQTT:   {"name", "kind", "priority", "hl7", "topics", "qos", "max_payload"},
	KindMLLP:   {"name", "kind", "priority", "hl7", "listen", "tls", "allowed_peers", "max_message"},
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
	// AllowInsecure permits tcp:// (or ws://) to a broker that is not loopback.
	AllowInsecure bool `yaml:"allow_insecure" json:"allow_insecure"`
}

type RemoteConfig struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
	// TrustedKeys are ed25519 public keys, base64 (32 bytes each); see PublicKeys.
	TrustedKeys []string `yaml:"trusted_keys" json:"trusted_keys"`
	Groups      []string `yaml:"groups" json:"groups"`
	// AllowedPaths: folders (and below) a pushed source may watch or move to;
	// empty = only the folders the local config already names.
	AllowedPaths []string `yaml:"allowed_paths" json:"allowed_paths"`
	// AllowedEndpoints: upload endpoints a push may select; empty = only the local one.
	AllowedEndpoints []string `yaml:"allowed_endpoints" json:"allowed_endpoints"`
	// Probation: after a push is applied, how long link failures revert it.
	Probation Duration `yaml:"probation" json:"probation"`
}

type Privacy struct {
	SendFilenames bool   `yaml:"send_filenames" json:"send_filenames"`
	IDSaltFile    string `yaml:"id_salt_file" json:"id_salt_file"`
}

type HTTP struct {
	Listen string `yaml:"listen" json:"listen"` // "off" disables it
}

type Log struct {
	Level  string `yaml:"level" json:"level"`
	Format string `yaml:"format" json:"format"`
	File   string `yaml:"file" json:"file"` // also write here (rotated); "" = stderr only
}

// Defaults that belong to no component: the configuration's own policy. The
// components' own defaults (folder.DefaultSettle, uploader.DefaultChunkSize,
// spool.DefaultKeepDone, mqtt.DefaultMaxPayload, ...) are used as they are.
const (
	DefaultMaxBytes    = 10 * GiB
	DefaultMinFreeDisk = 1 * GiB
	DefaultKeepAudit   = Duration(17520 * time.Hour)  // two years
	DefaultMaxSize     = 2 * GiB                      // sources[i].max_size of a folder
	DefaultMaxMessage  = Size(mllp.DefaultMaxMessage) // sources[i].max_message of an MLLP source
	DefaultProbation   = Duration(5 * time.Minute)
	DefaultHTTPListen  = "127.0.0.1:9464"
	DefaultPriority    = "normal"
	DefaultAfter       = "delete"
	DefaultHL7         = "auto"
	DefaultQoS         = 1
	DefaultLogLevel    = "info"
	DefaultLogFormat   = "json"
	MinChunkSize       = 64 * KiB
	MaxConcurrency     = 64
)

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

// isSet says whether the file wrote key. A Config built in code has no record:
// every zero field takes its default.
func (c *Config) isSet(key string) bool { return c.set[key] }

// ApplyDefaults fills every key the file did not write with its default. A key
// written as 0 keeps 0: it means "no limit" where the contract says so and is
// refused by Validate elsewhere (concurrency: 0).
func (c *Config) ApplyDefaults() {
	if c.Agent.ID == "" {
		h, _ := os.Hostname()
		c.Agent.ID = h
	}
	if c.Agent.DataDir == "" {
		c.Agent.DataDir = DefaultDataDir()
	}
	u := &c.Upload
	dflt(c, "upload.chunk_size", &u.ChunkSize, Size(uploader.DefaultChunkSize))
	dflt(c, "upload.concurrency", &u.Concurrency, uploader.DefaultConcurrency)
	if u.RequireVerification == nil {
		t := true
		u.RequireVerification = &t
	}
	dflt(c, "upload.retry.initial", &u.Retry.Initial, Duration(uploader.DefaultRetryInitial))
	dflt(c, "upload.retry.max", &u.Retry.Max, Duration(uploader.DefaultRetryMax))
	dflt(c, "upload.retry.max_attempts", &u.Retry.MaxAttempts, uploader.DefaultMaxAttempts)
	dflt(c, "spool.max_bytes", &c.Spool.MaxBytes, DefaultMaxBytes)
	dflt(c, "spool.min_free_disk", &c.Spool.MinFreeDisk, DefaultMinFreeDisk)
	dflt(c, "spool.keep_done", &c.Spool.KeepDone, Duration(spool.DefaultKeepDone))
	dflt(c, "spool.keep_audit", &c.Spool.KeepAudit, DefaultKeepAudit)
	for i := range c.Sources {
		s := &c.Sources[i]
		key := func(k string) string { return sourceKey(i, k) }
		dflt(c, key("priority"), &s.Priority, DefaultPriority)
		dflt(c, key("hl7"), &s.HL7, DefaultHL7)
		switch s.Kind {
		case KindFolder:
			if s.Include == nil {
				s.Include = slices.Clone(folder.DefaultInclude)
			}
			if s.Exclude == nil {
				s.Exclude = slices.Clone(folder.DefaultExclude)
			}
			dflt(c, key("settle"), &s.Settle, Duration(folder.DefaultSettle))
			dflt(c, key("rescan"), &s.Rescan, Duration(folder.DefaultRescan))
			dflt(c, key("after"), &s.After, DefaultAfter)
			dflt(c, key("max_size"), &s.MaxSize, DefaultMaxSize)
		case KindMQTT:
			if s.QoS == nil {
				q := DefaultQoS
				s.QoS = &q
			}
			dflt(c, key("max_payload"), &s.MaxPayload, Size(mqtt.DefaultMaxPayload))
		case KindMLLP:
			dflt(c, key("max_message"), &s.MaxMessage, DefaultMaxMessage)
		}
	}
	if c.Events.MQTT == nil {
		on := c.MQTT.Broker != ""
		c.Events.MQTT = &on
	}
	dflt(c, "remote_config.probation", &c.RemoteConfig.Probation, DefaultProbation)
	dflt(c, "http.listen", &c.HTTP.Listen, DefaultHTTPListen)
	dflt(c, "log.level", &c.Log.Level, DefaultLogLevel)
	dflt(c, "log.format", &c.Log.Format, DefaultLogFormat)
}

// dflt sets *v to d when *v is zero and the file did not write key. An empty
// string always takes the default (`priority: ""` means "the default").
func dflt[T comparable](c *Config, key string, v *T, d T) {
	var zero T
	_, isString := any(zero).(string)
	if *v == zero && (isString || !c.isSet(key)) {
		*v = d
	}
}

func sourceKey(i int, k string) string {
	return "sources[" + strconv.Itoa(i) + "]." + k
}
