package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/events"
	"github.com/edgecourier/courier/agent/folder"
	"github.com/edgecourier/courier/agent/mllp"
	"github.com/edgecourier/courier/agent/mqtt"
	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
)

// Options are what the command line adds to the config.
type Options struct {
	Logger  *slog.Logger
	Version string
	// EventsTee receives a copy of every event line written to events.file (courier dev prints them).
	EventsTee io.Writer
	// Progress receives upload progress (courier dev shows it for long uploads).
	Progress func(uploader.Progress)
}

// Agent is one running edge agent.
type Agent struct {
	cfg  *config.Config
	opts Options
	log  *slog.Logger

	spool    *spool.Spool
	uploader *uploader.Uploader
	sinks    []events.Sink
	closers  []io.Closer
	mqtt     *mqtt.Conn // nil when no broker is configured
	status   *mqtt.StatusPublisher

	mllpMetrics *mllp.Metrics // nil without an mllp source (agent/mllp.go)

	mu      sync.Mutex
	lastErr string
}

// New opens the spool and builds every component; nothing runs until Run.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Agent, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{cfg: cfg, opts: opts, log: log}
	if err := a.build(ctx); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *Agent) build(ctx context.Context) error {
	cfg := a.cfg
	var sinkNames []string
	if cfg.Events.File != "" {
		fs, err := events.OpenFile(cfg.Events.File, a.opts.EventsTee)
		if err != nil {
			return err
		}
		a.closers = append(a.closers, fs)
		a.sinks = append(a.sinks, fs)
		sinkNames = append(sinkNames, fs.Name())
	}
	if cfg.MQTT.Broker != "" {
		conn, err := mqtt.New(MQTTOptions(cfg, a.log))
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.File, err)
		}
		a.mqtt = conn
		if *cfg.Events.MQTT {
			s := mqtt.NewEventSink(conn, 0)
			a.sinks = append(a.sinks, batchSink{s})
			sinkNames = append(sinkNames, s.Name())
		}
	}
	if len(a.sinks) == 0 {
		// No consumer configured: events are logged (ids only) so items still finish.
		a.sinks = append(a.sinks, logSink{a.log.With("component", "events")})
		sinkNames = append(sinkNames, "log")
	}
	salt, err := readSalt(cfg.Privacy.IDSaltFile)
	if err != nil {
		return err
	}
	sp, err := spool.Open(ctx, spool.Options{
		Dir:         cfg.Agent.DataDir,
		MaxBytes:    int64(cfg.Spool.MaxBytes),
		MinFreeDisk: int64(cfg.Spool.MinFreeDisk),
		KeepDone:    cfg.Spool.KeepDone.D(),
		Sinks:       sinkNames,
		Inspect:     a.inspector(salt),
		Logger:      a.log.With("component", "spool"),
	})
	if err != nil {
		return err
	}
	a.spool = sp
	a.closers = append(a.closers, sp)
	if a.mqtt != nil {
		// Feeds and hooks are registered before the connection starts (in Run), so
		// messages queued in our persistent session find their route at once.
		for i, sc := range cfg.Sources {
			if sc.Kind != "mqtt" {
				continue
			}
			prio, _ := spool.ParsePriority(sc.Priority)
			if _, err := mqtt.NewFeed(a.mqtt, sp, mqtt.FeedOptions{
				Name: sc.Name, Topics: sc.Topics, QoS: byte(*sc.QoS), MaxPayload: int64(sc.MaxPayload), Priority: prio,
				NoInspect: sc.HL7 == "off",
			}); err != nil {
				return fmt.Errorf("%s: sources[%d]: %w", cfg.File, i, err)
			}
		}
		a.status = mqtt.NewStatusPublisher(a.mqtt, time.Minute, func(ctx context.Context) (any, error) {
			return a.Snapshot(ctx)
		})
		a.closers = append(a.closers, a.mqtt) // closed before the spool
	}

	client, err := httpClient(cfg.Upload.TLS)
	if err != nil {
		return err
	}
	up, err := uploader.New(sp, uploader.Options{
		Endpoint:            cfg.Upload.Endpoint,
		ChunkSize:           int64(cfg.Upload.ChunkSize),
		Concurrency:         cfg.Upload.Concurrency,
		BandwidthLimit:      int64(cfg.Upload.BandwidthLimit),
		RequireVerification: *cfg.Upload.RequireVerification,
		Retry: uploader.Retry{
			Initial:     cfg.Upload.Retry.Initial.D(),
			Max:         cfg.Upload.Retry.Max.D(),
			MaxAttempts: cfg.Upload.Retry.MaxAttempts,
		},
		AgentID:       cfg.Agent.ID,
		SendFilenames: cfg.Privacy.SendFilenames,
		Client:        client,
		Token:         tokenReader(cfg.Upload.BearerTokenFile, a.log),
		Logger:        a.log.With("component", "uploader"),
		Progress:      a.opts.Progress,
	})
	if err != nil {
		return fmt.Errorf("%s: upload: %w", cfg.File, err)
	}
	a.uploader = up
	return nil
}

// inspector reads HL7 v2 envelopes for sources with hl7: auto.
func (a *Agent) inspector(salt []byte) spool.Inspector {
	auto := false
	for _, s := range a.cfg.Sources {
		auto = auto || s.HL7 == "auto"
	}
	if !auto {
		return nil
	}
	return hl7Inspector(salt, 16<<20)
}

// Run starts sources, uploader and publisher and blocks until ctx is done or a
// component fails. It closes the spool before returning.
func (a *Agent) Run(ctx context.Context) error {
	defer a.close()
	// Build every source before starting anything: a source that cannot start
	// must not leave others running on a spool that is about to close.
	var sources []*folder.Source
	for i, sc := range a.cfg.Sources {
		if sc.Kind != "folder" {
			continue
		}
		prio, _ := spool.ParsePriority(sc.Priority)
		src, err := folder.New(folder.Options{
			Name:      sc.Name,
			Path:      sc.Path,
			Include:   sc.Include,
			Exclude:   sc.Exclude,
			Settle:    sc.Settle.D(),
			Rescan:    sc.Rescan.D(),
			After:     sc.After,
			MaxSize:   int64(sc.MaxSize),
			Priority:  prio,
			NoInspect: sc.HL7 == "off",
			Logger:    a.log.With("component", "folder", "source", sc.Name),
		}, a.spool)
		if err != nil {
			return &config.Error{File: a.cfg.File, Key: fmt.Sprintf("sources[%d]", i), Problem: err.Error()}
		}
		sources = append(sources, src)
	}
	mllpSources, merr := a.mllpSources() // agent/mllp.go
	if merr != nil {
		return merr
	}
	if a.cfg.RemoteConfig.Enabled {
		a.log.Warn("remote_config.enabled is set, but this version does not apply pushed configuration yet; the local file is used")
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, src := range sources {
		g.Go(func() error { return src.Run(ctx) })
	}
	for _, l := range mllpSources {
		g.Go(func() error { return l.Run(ctx) })
	}
	g.Go(func() error { return a.uploader.Run(ctx) })
	pub := &events.Publisher{
		Outbox:  a.spool,
		Sinks:   a.sinks,
		Options: EventOptions(a.cfg),
		Logger:  a.log.With("component", "events"),
	}
	g.Go(func() error { return pub.Run(ctx) })
	g.Go(func() error { a.housekeeping(ctx); return nil })
	if a.mqtt != nil {
		if err := a.mqtt.Start(ctx); err != nil {
			return err
		}
		g.Go(func() error { return a.status.Run(ctx) })
	}
	if a.cfg.HTTP.Listen != "" && a.cfg.HTTP.Listen != "off" {
		g.Go(func() error { return a.serveHTTP(ctx) })
	}
	a.log.Info("courier agent running", "agent", a.cfg.Agent.ID, "version", a.opts.Version,
		"data_dir", a.cfg.Agent.DataDir, "sources", len(a.cfg.Sources), "endpoint", a.cfg.Upload.Endpoint)
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// EventOptions is how this config shapes events (also used by `courier events replay`).
func EventOptions(cfg *config.Config) events.Options {
	return events.Options{
		AgentID:       cfg.Agent.ID,
		SendFilenames: cfg.Privacy.SendFilenames,
		FHIR: func(it *spool.Item) (any, bool) {
			return hl7DocRef(it)
		},
	}
}

// housekeeping sweeps finished rows and writes the status file that `courier status` reads.
func (a *Agent) housekeeping(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	sweep := time.Now()
	for {
		a.writeStatus(ctx, false)
		if time.Since(sweep) > 10*time.Minute {
			if n, err := a.spool.Sweep(ctx); err != nil {
				a.log.Warn("sweeping finished items failed", "err", err)
			} else if n > 0 {
				a.log.Info("swept finished items", "count", n)
			}
			sweep = time.Now()
		}
		select {
		case <-ctx.Done():
			a.writeStatus(context.Background(), true)
			return
		case <-t.C:
		}
	}
}

func (a *Agent) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i].Close(); err != nil {
			a.log.Warn("close failed", "err", err)
		}
	}
	a.closers = nil
}

func readSalt(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("privacy.id_salt_file %s: %w", path, err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}

// tokenReader returns the bearer token, re-reading the file when it changes so a
// rotated token is picked up without a restart.
func tokenReader(path string, log *slog.Logger) func() string {
	if path == "" {
		return nil
	}
	var mu sync.Mutex
	var tok string
	var mod time.Time
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		st, err := os.Stat(path)
		if err != nil {
			log.Warn("cannot read upload.bearer_token_file", "path", path, "err", err)
			return tok
		}
		if st.ModTime().Equal(mod) && tok != "" {
			return tok
		}
		b, err := os.ReadFile(path)
		if err != nil {
			log.Warn("cannot read upload.bearer_token_file", "path", path, "err", err)
			return tok
		}
		tok, mod = strings.TrimSpace(string(b)), st.ModTime()
		return tok
	}
}

func httpClient(t config.TLS) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tr.ResponseHeaderTimeout = 2 * time.Minute
	if t.CAFile != "" || t.ClientCert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("upload.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("upload.tls.ca_file %s: no PEM certificates found", t.CAFile)
			}
			tc.RootCAs = pool
		}
		if t.ClientCert != "" {
			c, err := tls.LoadX509KeyPair(t.ClientCert, t.ClientKey)
			if err != nil {
				return nil, fmt.Errorf("upload.tls.client_cert/client_key: %w", err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		tr.TLSClientConfig = tc
	}
	return &http.Client{Transport: tr}, nil
}

// dataPath is a file beside the spool.
func (a *Agent) dataPath(name string) string { return filepath.Join(a.cfg.Agent.DataDir, name) }

// ReplaySinks opens the config's event sinks for `courier events replay`.
func ReplaySinks(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]events.Sink, func(), error) {
	var sinks []events.Sink
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	if cfg.Events.File != "" {
		fs, err := events.OpenFile(cfg.Events.File, nil)
		if err != nil {
			return nil, nil, err
		}
		sinks = append(sinks, fs)
		closers = append(closers, fs)
	}
	if *cfg.Events.MQTT && cfg.MQTT.Broker != "" {
		o := MQTTOptions(cfg, log)
		o.ClientID = "courier-" + cfg.Agent.ID + "-replay" // the agent's own session stays untouched
		o.Transient = true
		conn, err := mqtt.New(o)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		if err := conn.Start(ctx); err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, conn)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := conn.WaitConnected(wctx); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("mqtt.broker %s: not reachable: %w", cfg.MQTT.Broker, err)
		}
		sinks = append(sinks, mqtt.NewEventSink(conn, 0))
	}
	if len(sinks) == 0 {
		closeAll()
		return nil, nil, fmt.Errorf("%s: no event sink configured (events.file or events.mqtt)", cfg.File)
	}
	return sinks, closeAll, nil
}

// MQTTOptions maps the config's mqtt section.
func MQTTOptions(cfg *config.Config, log *slog.Logger) mqtt.Options {
	return mqtt.Options{
		Broker:       cfg.MQTT.Broker,
		Username:     cfg.MQTT.Username,
		PasswordFile: cfg.MQTT.PasswordFile,
		TLS:          mqtt.TLSOptions{CAFile: cfg.MQTT.TLS.CAFile, ClientCert: cfg.MQTT.TLS.ClientCert, ClientKey: cfg.MQTT.TLS.ClientKey},
		AgentID:      cfg.Agent.ID,
		Logger:       log.With("component", "mqtt"),
	}
}
