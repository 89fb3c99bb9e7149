package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/remoteconfig"
	"github.com/edgecourier/courier/agent/statuspage"
	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
)

// Status is what `courier status`, /metrics and the MQTT status topic report.
type Status struct {
	Agent         string               `json:"agent"`
	Version       string               `json:"version,omitempty"`
	State         string               `json:"state"` // online | paused | stopped (offline: the MQTT last will)
	PID           int                  `json:"pid,omitempty"`
	UpdatedAt     time.Time            `json:"updated_at"`
	Link          *uploader.LinkStatus `json:"link,omitempty"`
	Counts        map[string]int       `json:"counts"`
	SpoolBytes    int64                `json:"spool_bytes"`
	OldestWaiting *time.Time           `json:"oldest_waiting,omitempty"`
	LastError     string               `json:"last_error,omitempty"`
	MQTT          *MQTTStatus          `json:"mqtt,omitempty"`
	LastErrors    []ItemError          `json:"last_errors,omitempty"`
	// Config is what configuration runs: version, source and the effective config's digest.
	Config *remoteconfig.Status `json:"config,omitempty"`

	// For fleets (the MQTT status topic): where and what runs.
	Hostname     string     `json:"hostname,omitempty"`
	OS           string     `json:"os,omitempty"`
	Arch         string     `json:"arch,omitempty"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	SpoolLimit   int64      `json:"spool_limit,omitempty"` // spool.max_bytes; 0 = none
	FreeDisk     int64      `json:"free_disk,omitempty"`   // on the spool's file system
	LastVerified *time.Time `json:"last_verified,omitempty"`
}

// MQTTStatus is the broker connection as the agent last saw it.
type MQTTStatus struct {
	Connected bool   `json:"connected"`
	LastError string `json:"last_error,omitempty"`
}

// ItemError is the last error of one item: ids and codes only.
type ItemError struct {
	ID    string      `json:"id"`
	State spool.State `json:"state"`
	Error string      `json:"error"`
	At    time.Time   `json:"at"`
}

const statusFile = "agent-status.json"

// snapshot reads the spool's counts and recent errors.
func snapshot(ctx context.Context, sp *spool.Spool, agentID string) (*Status, error) {
	c, err := sp.Counts(ctx)
	if err != nil {
		return nil, err
	}
	st := &Status{Agent: agentID, Counts: map[string]int{}, SpoolBytes: c.Bytes, UpdatedAt: time.Now().UTC()}
	for _, s := range spool.AllStates {
		st.Counts[string(s)] = c.ByState[s]
	}
	if !c.OldestWaiting.IsZero() {
		t := c.OldestWaiting.UTC()
		st.OldestWaiting = &t
	}
	for _, s := range []spool.State{spool.StateQuarantined, spool.StateWaiting} {
		items, err := sp.List(ctx, spool.ListFilter{State: s, Limit: 5})
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			if it.LastError != "" || it.Reason != "" {
				msg := it.LastError
				if msg == "" {
					msg = it.Reason
				}
				st.LastErrors = append(st.LastErrors, ItemError{ID: it.ID, State: it.State, Error: msg, At: it.UpdatedAt})
			}
		}
	}
	sort.Slice(st.LastErrors, func(i, j int) bool { return st.LastErrors[i].At.After(st.LastErrors[j].At) })
	if len(st.LastErrors) > 5 {
		st.LastErrors = st.LastErrors[:5]
	}
	return st, nil
}

// Snapshot is the live agent's status.
func (a *Agent) Snapshot(ctx context.Context) (*Status, error) {
	a.mu.Lock()
	agentID, up, mq := a.cfg.Agent.ID, a.uploader, a.mq.conn()
	a.mu.Unlock()
	st, err := snapshot(ctx, a.spool, agentID)
	if err != nil {
		return nil, err
	}
	st.Version = a.opts.Version
	cs := a.ConfigStatus()
	st.Config = &cs
	st.PID = os.Getpid()
	st.Hostname, _ = os.Hostname()
	st.OS, st.Arch = runtime.GOOS, runtime.GOARCH
	if !a.started.IsZero() {
		t := a.started
		st.StartedAt = &t
	}
	a.mu.Lock()
	st.SpoolLimit = int64(a.cfg.Spool.MaxBytes)
	a.mu.Unlock()
	if free, err := a.spool.FreeDisk(); err == nil {
		st.FreeDisk = free
	}
	if t := a.lastVerified.Load(); t != nil {
		st.LastVerified = t
	}
	st.State = "online"
	l := up.Link()
	st.Link = &l
	if l.State == "paused" {
		st.State = "paused"
	}
	if mq != nil {
		ms := &MQTTStatus{Connected: mq.Connected()}
		if err := mq.LastError(); err != nil && !ms.Connected {
			ms.LastError = err.Error()
		}
		st.MQTT = ms
	}
	switch {
	case l.LastError != "" && l.State != uploader.LinkUp:
		st.LastError = l.LastError
	case len(st.LastErrors) > 0:
		st.LastError = st.LastErrors[0].Error
	}
	return st, nil
}

// writeStatus leaves the live state (link, pid) where `courier status` finds it.
func (a *Agent) writeStatus(ctx context.Context, stopped bool) {
	st, err := a.Snapshot(ctx)
	if err != nil {
		a.log.Debug("status snapshot failed", "err", err)
		return
	}
	if stopped {
		st.State = "stopped"
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := a.dataPath(statusFile + ".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		os.Rename(tmp, a.dataPath(statusFile))
	}
}

// ReadStatus is `courier status`: the spool's counts (opened shared, beside a
// running agent) plus the last state the agent wrote.
func ReadStatus(ctx context.Context, cfg *config.Config) (*Status, error) {
	if _, err := os.Stat(filepath.Join(cfg.Agent.DataDir, "spool.db")); err != nil {
		return nil, fmt.Errorf("no spool in %s (agent.data_dir): has the agent ever run with this config?", cfg.Agent.DataDir)
	}
	sp, err := spool.Open(ctx, spool.Options{Dir: cfg.Agent.DataDir, Shared: true})
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	st, err := snapshot(ctx, sp, cfg.Agent.ID)
	if err != nil {
		return nil, err
	}
	st.State = "stopped"
	if b, err := os.ReadFile(filepath.Join(cfg.Agent.DataDir, statusFile)); err == nil {
		var live Status
		if json.Unmarshal(b, &live) == nil {
			st.Version, st.Link, st.PID, st.MQTT, st.Config = live.Version, live.Link, live.PID, live.MQTT, live.Config
			if live.State != "stopped" && time.Since(live.UpdatedAt) < 30*time.Second {
				st.State = live.State
			}
		}
	}
	return st, nil
}

// serveHTTP serves /healthz, /readyz and /metrics on listen until ctx ends.
func (a *Agent) serveHTTP(ctx context.Context, listen string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := a.spool.Counts(r.Context()); err != nil {
			http.Error(w, "spool: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		a.mu.Lock()
		up := a.uploader
		a.mu.Unlock()
		if l := up.Link(); l.State != uploader.LinkUp {
			http.Error(w, fmt.Sprintf("upload link %s since %s: %s", l.State, l.Since.Format(time.RFC3339), l.Reason), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", a.metrics.handler())
	mux.Handle("/", statuspage.Handler(a.PageView, a.log.With("component", "statuspage")))
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		// The agent's job is moving files; a taken metrics port must not stop it.
		a.log.Warn("http.listen: cannot listen; /metrics and /healthz are off", "addr", listen, "err", err)
		return nil
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { a.sampleHistory(gctx); return nil })
	g.Go(func() error {
		<-gctx.Done()
		return srv.Close()
	})
	g.Go(func() error {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err // a failed server ends the closer above through gctx
	})
	return g.Wait()
}
