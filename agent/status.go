package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgecourier/courier/agent/config"
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
	st, err := snapshot(ctx, a.spool, a.cfg.Agent.ID)
	if err != nil {
		return nil, err
	}
	st.Version = a.opts.Version
	st.PID = os.Getpid()
	st.State = "online"
	l := a.uploader.Link()
	st.Link = &l
	if l.State == "paused" {
		st.State = "paused"
	}
	if a.mqtt != nil {
		ms := &MQTTStatus{Connected: a.mqtt.Connected()}
		if err := a.mqtt.LastError(); err != nil && !ms.Connected {
			ms.LastError = err.Error()
		}
		st.MQTT = ms
	}
	switch {
	case l.LastError != "" && l.State != "ok":
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
			st.Version, st.Link, st.PID, st.MQTT = live.Version, live.Link, live.PID, live.MQTT
			if live.State != "stopped" && time.Since(live.UpdatedAt) < 30*time.Second {
				st.State = live.State
			}
		}
	}
	return st, nil
}

// serveHTTP serves /healthz, /readyz and /metrics on http.listen.
func (a *Agent) serveHTTP(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := a.spool.Counts(r.Context()); err != nil {
			http.Error(w, "spool: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Snapshot(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintln(w, "# HELP courier_items Items in the spool per state.\n# TYPE courier_items gauge")
		for _, s := range spool.AllStates {
			fmt.Fprintf(w, "courier_items{state=%q} %d\n", s, st.Counts[string(s)])
		}
		fmt.Fprintf(w, "# HELP courier_spool_bytes Bytes of content held in the spool.\n# TYPE courier_spool_bytes gauge\ncourier_spool_bytes %d\n", st.SpoolBytes)
		up := 1
		if st.State == "paused" {
			up = 0
		}
		fmt.Fprintf(w, "# HELP courier_upload_link_up 0 when uploads are paused (401/403 from the server).\n# TYPE courier_upload_link_up gauge\ncourier_upload_link_up %d\n", up)
		if st.OldestWaiting != nil {
			fmt.Fprintf(w, "# HELP courier_oldest_waiting_seconds Age of the oldest item not yet verified.\n# TYPE courier_oldest_waiting_seconds gauge\ncourier_oldest_waiting_seconds %.0f\n", time.Since(*st.OldestWaiting).Seconds())
		}
		a.writeMLLPMetrics(w) // agent/mllp.go
	})
	ln, err := net.Listen("tcp", a.cfg.HTTP.Listen)
	if err != nil {
		// The agent's job is moving files; a taken metrics port must not stop it.
		a.log.Warn("http.listen: cannot listen; /metrics and /healthz are off", "addr", a.cfg.HTTP.Listen, "err", err)
		return nil
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && !strings.Contains(err.Error(), "closed") {
		return err
	}
	return nil
}
