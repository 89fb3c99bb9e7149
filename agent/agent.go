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
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/events"
	"github.com/edgecourier/courier/agent/folder"
	"github.com/edgecourier/courier/agent/mllp"
	"github.com/edgecourier/courier/agent/mqtt"
	"github.com/edgecourier/courier/agent/statuspage"
	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
)

// Options are what the command line adds to the config.
type Options struct {
	Logger *slog.Logger
	// LogLevel, when set, is the level Logger's handler follows: Apply sets it from
	// log.level so a reload changes verbosity without a restart.
	LogLevel *slog.LevelVar
	Version  string
	// EventsTee receives a copy of every event line written to events.file (courier dev prints them).
	EventsTee io.Writer
	// Progress receives upload progress (courier dev shows it for long uploads).
	Progress func(uploader.Progress)
}

// Agent is one running edge agent. Its parts are built by New and started by Run;
// Apply swaps parts of a running agent for a new configuration.
type Agent struct {
	opts Options
	log  *slog.Logger

	spool   *spool.Spool // for the agent's whole life: data_dir and spool.* need a restart
	metrics *metrics

	// applyCh hands Apply's requests to Run's supervisor, which owns every start and stop.
	applyCh chan applyRequest
	runDone chan struct{} // closed when Run has returned

	remote *remote // nil unless remote_config.enabled (agent/remote.go)

	mllpMetrics *mllp.Metrics // created on first use (agent/mllp.go); empty without an mllp source

	started       time.Time                            // when New built the agent
	history       *statuspage.History                  // the status page's charts (agent/page.go)
	verifiedBytes atomic.Int64                         // bytes of files the server verified, since start
	lastVerified  atomic.Pointer[time.Time]            // when the server last verified a file
	statusPub     atomic.Pointer[mqtt.StatusPublisher] // the current one, for link changes
	linkCh        chan uploader.LinkStatus             // link changes for watchLink (agent/page.go)

	mu       sync.Mutex // guards the fields below: Snapshot and /metrics read them during a swap
	cfg      *config.Config
	uploader *uploader.Uploader
	mq       *mqttParts  // nil when no broker is configured
	sinks    *sinkSet    // the event sinks the publisher drains
	closers  []io.Closer // closed in reverse order when Run returns (the spool last)
}

// New opens the spool and builds every component; nothing runs until Run.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Agent, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{cfg: cfg, opts: opts, log: log, applyCh: make(chan applyRequest), runDone: make(chan struct{}),
		started: time.Now().UTC(), history: statuspage.NewHistory(), linkCh: make(chan uploader.LinkStatus, 1)}
	// With remote configuration on, start on the last-known-good documents layered on
	// the local file, so a PC whose broker is unreachable at boot runs what central IT
	// last gave it.
	start, err := a.newRemote(cfg)
	if err != nil {
		return nil, err
	}
	a.cfg = start
	if err := a.build(ctx); err != nil {
		a.close()
		return nil, err
	}
	a.metrics = newMetrics(a)
	return a, nil
}

func (a *Agent) build(ctx context.Context) error {
	cfg := a.cfg
	a.setLevel(cfg)
	var err error
	if a.mq, err = a.buildMQTT(cfg); err != nil {
		return err
	}
	if a.sinks, err = agentSinks(cfg, a.mq.conn(), a.opts.EventsTee, a.log); err != nil {
		a.mq.close()
		a.mq = nil
		return err
	}
	salt, err := readSalt(cfg.Privacy.IDSaltFile)
	if err != nil {
		a.sinks.Close()
		a.mq.close()
		return err
	}
	sp, err := spool.Open(ctx, spool.Options{
		Dir:         cfg.Agent.DataDir,
		MaxBytes:    int64(cfg.Spool.MaxBytes),
		MinFreeDisk: int64(cfg.Spool.MinFreeDisk),
		KeepDone:    cfg.Spool.KeepDone.D(),
		Sinks:       a.sinks.names,
		Inspect:     inspector(salt),
		Split:       hl7Splitter(salt, 16<<20),
		Logger:      a.log.With("component", "spool"),
	})
	if err != nil {
		a.sinks.Close()
		a.mq.close()
		return err
	}
	a.spool = sp
	a.closers = append(a.closers, sp)
	if a.mq != nil {
		// Feeds are registered before the connection starts (in Run), so messages
		// queued in our persistent session find their route at once.
		if err := a.mq.addFeeds(cfg, sp); err != nil {
			return err
		}
		a.mq.status = a.newStatusPublisher(a.mq.c)
	}
	up, err := a.buildUploader(cfg)
	if err != nil {
		return err
	}
	a.uploader = up
	return nil
}

func (a *Agent) newStatusPublisher(c *mqtt.Conn) *mqtt.StatusPublisher {
	p := mqtt.NewStatusPublisher(c, time.Minute, func(ctx context.Context) (any, error) {
		return a.Snapshot(ctx)
	})
	a.statusPub.Store(p)
	return p
}

// setLevel follows log.level when the command line handed in a LevelVar.
func (a *Agent) setLevel(cfg *config.Config) {
	if a.opts.LogLevel != nil {
		a.opts.LogLevel.Set(ParseLevel(cfg.Log.Level))
	}
}

// ParseLevel maps log.level to a slog level (info for anything else).
func ParseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *Agent) buildUploader(cfg *config.Config) (*uploader.Uploader, error) {
	client, err := httpClient(cfg.Upload.TLS)
	if err != nil {
		return nil, err
	}
	up, err := uploader.New(a.spool, uploader.Options{
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
		Progress:      a.progress,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: upload: %w", cfg.File, err)
	}
	up.WatchLink(a.linkChanged) // the watch of a replaced uploader reports nothing more
	return up, nil
}

// buildFolders builds a folder source for each folder entry of cfg whose name is in
// only (all when only is nil).
func (a *Agent) buildFolders(cfg *config.Config, only map[string]bool) (map[string]*folder.Source, error) {
	out := map[string]*folder.Source{}
	for i, sc := range cfg.Sources {
		if sc.Kind != "folder" || (only != nil && !only[sc.Name]) {
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
			return nil, &config.Error{File: cfg.File, Key: fmt.Sprintf("sources[%d]", i), Problem: err.Error()}
		}
		out[sc.Name] = src
	}
	return out, nil
}

// Run starts sources, uploader and publisher and blocks until ctx is done or a
// component fails; meanwhile it carries out Apply's swaps. Every goroutine it
// starts has ended when it returns, and the spool is closed.
func (a *Agent) Run(ctx context.Context) error {
	defer close(a.runDone)
	defer a.close()
	// Build every source before starting anything: a source that cannot start
	// must not leave others running on a spool that is about to close.
	folders, err := a.buildFolders(a.cfg, nil)
	if err != nil {
		return err
	}
	mllpSources, merr := a.mllpSources() // agent/mllp.go
	if merr != nil {
		return merr
	}
	if err := a.mq.start(ctx); err != nil {
		for _, l := range mllpSources {
			l.Close()
		}
		return fmt.Errorf("mqtt: %w", err)
	}

	g, gctx := errgroup.WithContext(ctx)
	r := &running{g: g, ctx: gctx, folders: map[string]*unit{}}
	for name, src := range folders {
		r.folders[name] = r.start("folder source "+name, src.Run)
	}
	for i, l := range mllpSources {
		r.start(fmt.Sprintf("mllp source %d", i), l.Run)
	}
	r.uploader = r.start("uploader", a.uploader.Run)
	r.publisher = r.start("events", a.publisher(a.cfg, a.sinks).Run)
	r.mqttStatus = a.startMQTTStatus(r, a.mq)
	r.housekeeping = r.start("housekeeping", func(ctx context.Context) error { a.housekeeping(ctx); return nil })
	r.start("link watch", func(ctx context.Context) error { a.watchLink(ctx); return nil })
	r.http = a.startHTTP(r, a.cfg.HTTP.Listen)
	if a.remote != nil {
		r.start("remote config", a.remote.m.Run)
	}
	g.Go(func() error { a.supervise(r); return nil })

	a.log.Info("courier agent running", "agent", a.cfg.Agent.ID, "version", a.opts.Version,
		"data_dir", a.cfg.Agent.DataDir, "sources", len(a.cfg.Sources), "endpoint", a.cfg.Upload.Endpoint)
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func (a *Agent) startMQTTStatus(r *running, mq *mqttParts) *unit {
	if mq == nil {
		return nil
	}
	return r.start("mqtt status", mq.status.Run)
}

func (a *Agent) startHTTP(r *running, listen string) *unit {
	if listen == "" || listen == "off" {
		return nil
	}
	return r.start("http", func(ctx context.Context) error { return a.serveHTTP(ctx, listen) })
}

func (a *Agent) publisher(cfg *config.Config, s *sinkSet) *events.Publisher {
	return &events.Publisher{
		Outbox:  a.spool,
		Sinks:   s.sinks,
		Options: EventOptions(cfg),
		Logger:  a.log.With("component", "events"),
	}
}

// running is what Run started: each part can be stopped and replaced on its own.
type running struct {
	g   *errgroup.Group
	ctx context.Context // Run's group context

	folders      map[string]*unit // by source name
	uploader     *unit
	publisher    *unit
	mqttStatus   *unit
	housekeeping *unit
	http         *unit
}

// unit is one part of a running agent, owned by Run's errgroup.
type unit struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs f in Run's group under its own context. A part stopped by a swap ends
// quietly; one that fails on its own stops the agent, as before reloads existed.
func (r *running) start(name string, f func(ctx context.Context) error) *unit {
	ctx, cancel := context.WithCancel(r.ctx)
	u := &unit{cancel: cancel, done: make(chan struct{})}
	r.g.Go(func() error {
		defer close(u.done)
		defer cancel()
		err := f(ctx)
		if ctx.Err() != nil && r.ctx.Err() == nil {
			return nil // stopped by a swap
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	return u
}

// stop cancels the part and waits until it has ended; nil-safe.
func (u *unit) stop() {
	if u == nil {
		return
	}
	u.cancel()
	<-u.done
}

// EventOptions is how this config shapes events (also used by `courier events replay`).
func EventOptions(cfg *config.Config) events.Options {
	return events.Options{
		AgentID:       cfg.Agent.ID,
		SendFilenames: cfg.Privacy.SendFilenames,
		FHIR:          fhirDocRef,
		Attachments:   attachmentsOf,
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

// close closes what New built: the MQTT connection and the sinks, then the spool.
func (a *Agent) close() {
	a.mu.Lock()
	mq, sinks, closers := a.mq, a.sinks, a.closers
	a.mq, a.sinks, a.closers = nil, nil, nil
	a.mu.Unlock()
	mq.close()
	if sinks != nil {
		if err := sinks.Close(); err != nil {
			a.log.Warn("close event sinks failed", "err", err)
		}
	}
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i].Close(); err != nil {
			a.log.Warn("close failed", "err", err)
		}
	}
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
func (a *Agent) dataPath(name string) string { return filepath.Join(a.spool.Dir(), name) }
