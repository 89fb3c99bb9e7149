package remoteconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"strings"
	"time"

	"github.com/edgecourier/courier/agent/config"
)

// Options wire a Manager to the agent. The functions are the agent's: the Manager
// decides what to run, the agent knows how.
type Options struct {
	AgentID   string
	Groups    []string // remote_config.groups, in layering order (later wins); the agent's own document wins over all
	Verifier  *Verifier
	Store     *Store
	Probation time.Duration
	// ProbeEvery is the probation probe interval [probation/10, between 1s and 30s].
	ProbeEvery time.Duration
	Logger     *slog.Logger
	Now        func() time.Time

	// Merge overlays the documents' config objects, in order, on the local config
	// and validates the result, local limits included.
	Merge func(docs []Document) (*config.Config, error)
	// Apply swaps the running components to cfg (the one reload path SIGHUP uses too).
	Apply func(ctx context.Context, cfg *config.Config, origin string) error
	// Probe tries the upload link as cfg configures it; nil means it works.
	Probe func(ctx context.Context, cfg *config.Config) error
	// Digest is the SHA-256 of an effective config.
	Digest func(cfg *config.Config) string
	// Publish reports a status (retained on courier/<id>/config/status); best effort.
	Publish func(ctx context.Context, st Status)
}

// Manager receives signed documents, decides whether they may run, applies them
// through the agent, keeps the last-known-good state and reverts a document that
// breaks the upload link during probation.
type Manager struct {
	o       Options
	log     *slog.Logger
	in      chan []byte
	refresh chan refreshRequest
	state   *State
	cfg     *config.Config // what runs now
	st      Status

	// probation of the last applied document
	prev      *config.Config
	prevState *State
	target    string
	version   int64
	until     time.Time
	failures  int

	// seen holds documents already reported (rejected or reverted), so the broker's
	// redelivery of a retained one at every reconnect is not reported again.
	seen map[string]bool
}

// New loads the saved state. It does not apply anything: call Startup, then Run.
func New(o Options) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ProbeEvery <= 0 {
		o.ProbeEvery = min(max(o.Probation/10, time.Second), 30*time.Second)
	}
	st, err := o.Store.Load()
	if err != nil {
		return nil, err
	}
	return &Manager{o: o, log: o.Logger.With("component", "remote-config"), in: make(chan []byte, 16), refresh: make(chan refreshRequest), state: st, seen: map[string]bool{}}, nil
}

// Startup returns the config to start with: the local one merged with the saved
// documents (the last-known-good, so an agent whose broker is down at boot still runs
// what central IT last gave it). A saved document that no longer verifies (its key was
// retired) or no longer merges is dropped with a log line.
func (m *Manager) Startup(local *config.Config) *config.Config {
	m.cfg = local
	m.st = Status{State: StateApplied, Source: SourceLocal, ConfigSHA256: m.o.Digest(local), At: m.o.Now().UTC()}
	if len(m.state.Applied) == 0 {
		return local
	}
	var keep []Applied
	for _, a := range m.state.Applied {
		doc, err := m.check([]byte(a.JWS))
		if err != nil {
			m.log.Warn("remote config: saved document dropped", "target", a.Target, "version", a.Version, "reason", err.Error())
			continue
		}
		if doc.Version != a.Version || doc.Target != a.Target {
			continue
		}
		keep = append(keep, a)
	}
	m.state.Applied = keep
	if len(keep) == 0 {
		return local
	}
	cfg, err := m.merge(m.state)
	if err != nil {
		m.log.Warn("remote config: saved documents no longer apply; running on the local config", "reason", err.Error())
		m.state.Applied = nil
		return local
	}
	m.cfg = cfg
	m.st = Status{Version: m.topVersion(m.state), State: StateApplied, ConfigSHA256: m.o.Digest(cfg), Source: SourceLastKnownGood,
		At: m.o.Now().UTC(), Applied: m.state.Versions()}
	m.log.Info("remote config: starting on last-known-good", "applied", m.state.Versions())
	return cfg
}

// Status is the current report.
func (m *Manager) Status() Status { return m.st }

// Offer hands a message from a config topic to the Manager (called by the MQTT
// subscription). Documents are handled one at a time by Run, in arrival order.
func (m *Manager) Offer(ctx context.Context, payload []byte) {
	select {
	case m.in <- append([]byte(nil), payload...):
	case <-ctx.Done():
	}
}

// Run handles offered documents and watches probation until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.o.ProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-m.in:
			m.handle(ctx, b)
		case req := <-m.refresh:
			req.reply <- m.relayer(ctx, req.local)
		case <-t.C:
			m.watch(ctx)
		}
	}
}

func (m *Manager) check(b []byte) (*Document, error) {
	doc, err := m.o.Verifier.Verify(b, m.o.Now())
	if err != nil {
		return nil, err
	}
	if err := CheckTarget(doc, m.o.AgentID, m.o.Groups); err != nil {
		return nil, err
	}
	return doc, nil
}

// layered returns st's documents in layering order: groups as remote_config.groups
// lists them, then the agent's own.
func (m *Manager) layered(st *State) ([]Document, error) {
	var docs []Document
	order := make([]string, 0, len(m.o.Groups)+1)
	for _, g := range m.o.Groups {
		order = append(order, "group:"+g)
	}
	order = append(order, "agent:"+m.o.AgentID)
	for _, t := range order {
		for _, a := range st.Applied {
			if a.Target != t {
				continue
			}
			doc, err := m.o.Verifier.Verify([]byte(a.JWS), m.o.Now())
			if err != nil {
				return nil, fmt.Errorf("%s version %d: %w", a.Target, a.Version, err)
			}
			docs = append(docs, *doc)
		}
	}
	return docs, nil
}

func (m *Manager) merge(st *State) (*config.Config, error) {
	docs, err := m.layered(st)
	if err != nil {
		return nil, err
	}
	return m.o.Merge(docs)
}

func (m *Manager) topVersion(st *State) int64 {
	var v int64
	for _, a := range st.Applied {
		if strings.HasPrefix(a.Target, "agent:") {
			return a.Version
		}
		v = max(v, a.Version)
	}
	return v
}

func (m *Manager) handle(ctx context.Context, b []byte) {
	text := strings.TrimSpace(string(b))
	if text == "" {
		return // a retained message cleared by central IT: nothing to apply
	}
	if m.seen[text] {
		return
	}
	doc, err := m.check([]byte(text))
	if err != nil {
		m.seen[text] = true
		m.reject(ctx, nil, err)
		return
	}
	if cur := m.state.Version(doc.Target); cur == doc.Version {
		for _, a := range m.state.Applied {
			if a.Target == doc.Target && a.JWS == text {
				// The broker redelivered what runs (retained, at every connect).
				if m.st.Source == SourceLastKnownGood {
					m.st.Source, m.st.At = SourceRemote, m.o.Now().UTC()
					m.publish(ctx)
				}
				return
			}
		}
	}
	if floor := m.state.Floor[doc.Target]; doc.Version <= floor {
		why := "already applied"
		if m.state.Version(doc.Target) != floor {
			why = "applied before, or reverted"
		}
		m.seen[text] = true
		m.reject(ctx, doc, fmt.Errorf("version %d is not newer than version %d, %s for %s (a replayed or out-of-order document)", doc.Version, floor, why, doc.Target))
		return
	}
	next := m.state.With(Applied{Target: doc.Target, Version: doc.Version, JWS: text})
	cfg, err := m.merge(next)
	if err != nil {
		m.seen[text] = true
		m.reject(ctx, doc, err)
		return
	}
	// Probation only makes sense if the link worked before: with nothing working to go
	// back to, reverting would not help.
	prevOK := m.o.Probe == nil || m.o.Probe(ctx, m.cfg) == nil
	origin := fmt.Sprintf("remote %s v%d", doc.Target, doc.Version)
	if err := m.o.Apply(ctx, cfg, origin); err != nil {
		m.reject(ctx, doc, fmt.Errorf("apply: %w", err))
		return
	}
	if err := m.o.Store.Save(next); err != nil {
		m.log.Error("remote config: applied but not saved as last-known-good", "err", err)
	}
	m.prev, m.prevState = m.cfg, m.state
	m.cfg, m.state = cfg, next
	m.target, m.version, m.failures = doc.Target, doc.Version, 0
	m.until = time.Time{}
	if prevOK && m.o.Probation > 0 && m.o.Probe != nil {
		m.until = m.o.Now().Add(m.o.Probation)
	} else if !prevOK {
		m.log.Warn("remote config: the upload link was already failing before this document; no probation (nothing working to go back to)", "target", doc.Target, "version", doc.Version)
	}
	m.st = Status{Version: doc.Version, State: StateApplied, ConfigSHA256: m.o.Digest(cfg), Source: SourceRemote,
		At: m.o.Now().UTC(), Target: doc.Target, Applied: next.Versions()}
	m.log.Info("remote config: applied", "target", doc.Target, "version", doc.Version, "config_sha256", m.st.ConfigSHA256, "probation", m.o.Probation.String())
	m.publish(ctx)
}

// watch probes the link during probation; three failures in a row revert.
func (m *Manager) watch(ctx context.Context) {
	if m.until.IsZero() {
		return
	}
	if m.o.Now().After(m.until) {
		m.log.Info("remote config: probation passed", "target", m.target, "version", m.version)
		m.until, m.prev, m.prevState = time.Time{}, nil, nil
		return
	}
	err := m.o.Probe(ctx, m.cfg)
	if err == nil {
		m.failures = 0
		return
	}
	m.failures++
	if m.failures < 3 {
		return
	}
	reason := fmt.Sprintf("uploads fail under version %d: %v", m.version, err)
	back := m.prevState
	for _, a := range m.state.Applied {
		if a.Target == m.target {
			m.seen[a.JWS] = true
		}
	}
	back.RaiseFloor(m.target, m.version) // never re-applied, even though the broker retains it
	if aerr := m.o.Apply(ctx, m.prev, "revert of "+m.target); aerr != nil {
		m.log.Error("remote config: revert failed; keeping the new config", "err", aerr)
		m.until = time.Time{}
		return
	}
	if serr := m.o.Store.Save(back); serr != nil {
		m.log.Error("remote config: reverted but not saved", "err", serr)
	}
	m.cfg, m.state = m.prev, back
	m.until, m.prev, m.prevState = time.Time{}, nil, nil
	src := SourceRemote
	if len(back.Applied) == 0 {
		src = SourceLocal
	}
	m.st = Status{Version: m.version, State: StateReverted, Error: reason, ConfigSHA256: m.o.Digest(m.cfg), Source: src,
		At: m.o.Now().UTC(), Target: m.target, Applied: back.Versions()}
	m.log.Warn("remote config: reverted to the previous config", "target", m.target, "version", m.version, "reason", reason)
	m.publish(ctx)
}

func (m *Manager) reject(ctx context.Context, doc *Document, err error) {
	st := m.st
	st.State, st.Error, st.At = StateRejected, err.Error(), m.o.Now().UTC()
	st.Target, st.Version = "", 0
	if doc != nil {
		st.Target, st.Version = doc.Target, doc.Version
	}
	// The running config stays: digest, source and applied versions are unchanged.
	st.ConfigSHA256, st.Source, st.Applied = m.o.Digest(m.cfg), m.st.Source, m.state.Versions()
	m.st = st
	m.log.Warn("remote config: document rejected; the running config stays", "target", st.Target, "version", st.Version, "reason", st.Error)
	m.publish(ctx)
}

func (m *Manager) publish(ctx context.Context) {
	if m.o.Publish != nil {
		m.o.Publish(ctx, m.st)
	}
}

// ErrOutsideLimits marks a document that asks for more than the local limits allow.
var ErrOutsideLimits = errors.New("outside the local limits")

type refreshRequest struct {
	local *config.Config
	reply chan error
}

// Refresh layers the running documents on a changed local file (SIGHUP) and applies
// the result; documents that no longer fit the new file are dropped, with a log line.
// Merge must already see the new local file.
func (m *Manager) Refresh(ctx context.Context, local *config.Config) error {
	req := refreshRequest{local: local, reply: make(chan error, 1)}
	select {
	case m.refresh <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Manager) relayer(ctx context.Context, local *config.Config) error {
	cfg, err := m.merge(m.state)
	if err != nil {
		m.log.Warn("remote config: the applied documents do not fit the changed local file; running on the local file alone", "reason", err.Error())
		m.state = &State{Floor: m.state.Floor}
		m.o.Store.Save(m.state)
		cfg = local
	}
	m.until, m.prev, m.prevState = time.Time{}, nil, nil
	if err := m.o.Apply(ctx, cfg, "sighup"); err != nil {
		return err
	}
	m.cfg = cfg
	src := m.st.Source
	if len(m.state.Applied) == 0 {
		src = SourceLocal
	}
	m.st = Status{Version: m.topVersion(m.state), State: StateApplied, ConfigSHA256: m.o.Digest(cfg), Source: src,
		At: m.o.Now().UTC(), Applied: m.state.Versions()}
	m.publish(ctx)
	return nil
}
