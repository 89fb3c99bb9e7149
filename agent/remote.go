package agent

// Remote configuration on the agent's side: the Manager (agent/remoteconfig) decides
// what may run; this file connects it to the agent's MQTT session, its one reload
// path (Apply) and the upload link probe.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/mqtt"
	"github.com/edgecourier/courier/agent/remoteconfig"
)

// remote is the agent's remote configuration; nil when remote_config.enabled is off.
type remote struct {
	m *remoteconfig.Manager

	mu    sync.Mutex
	local *config.Config // the local file, under which pushed documents are layered
}

// newRemote builds the Manager and returns the config to start with (the local file
// with the last-known-good documents layered on it).
func (a *Agent) newRemote(local *config.Config) (*config.Config, error) {
	rc := local.RemoteConfig
	if !rc.Enabled {
		return local, nil
	}
	ver, err := remoteconfig.NewVerifier(rc.TrustedKeys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", local.File, err)
	}
	r := &remote{local: local}
	m, err := remoteconfig.New(remoteconfig.Options{
		AgentID:   local.Agent.ID,
		Groups:    rc.Groups,
		Verifier:  ver,
		Store:     remoteconfig.NewStore(local.Agent.DataDir),
		Probation: rc.Probation.D(),
		Logger:    a.log,
		Merge:     func(docs []remoteconfig.Document) (*config.Config, error) { return r.merge(docs) },
		Apply:     a.Apply,
		Probe:     ProbeLink,
		Digest:    func(c *config.Config) string { return c.Digest() },
		Publish:   a.publishConfigStatus,
	})
	if err != nil {
		return nil, err
	}
	r.m = m
	a.remote = r
	return m.Startup(local), nil
}

// merge layers the documents, in order, on the local file and checks the local limits.
func (r *remote) merge(docs []remoteconfig.Document) (*config.Config, error) {
	r.mu.Lock()
	local := r.local
	r.mu.Unlock()
	cfg := local
	for _, d := range docs {
		next, err := config.Overlay(cfg, "remote "+d.Target, d.Config)
		if err != nil {
			return nil, fmt.Errorf("merged config does not validate: %w", err)
		}
		cfg = next
	}
	if err := remoteconfig.CheckLimits(local, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// subscribeConfig routes the agent's and its groups' config topics to the Manager,
// on every new connection (before it starts).
func (a *Agent) subscribeConfig(c *mqtt.Conn, cfg *config.Config) {
	if a.remote == nil || c == nil {
		return
	}
	topics := []string{mqtt.ConfigTopic(cfg.Agent.ID)}
	for _, g := range cfg.RemoteConfig.Groups {
		topics = append(topics, mqtt.GroupConfigTopic(g))
	}
	c.Subscribe(topics, func(ctx context.Context, _ string, payload []byte) { a.remote.m.Offer(ctx, payload) })
	c.OnConnect(func(ctx context.Context) { a.publishConfigStatus(ctx, a.remote.m.Status()) })
}

// publishConfigStatus leaves the retained courier/<id>/config/status; best effort (it
// is sent again at every connect).
func (a *Agent) publishConfigStatus(ctx context.Context, st remoteconfig.Status) {
	a.mu.Lock()
	c, id := a.mq.conn(), a.cfg.Agent.ID
	a.mu.Unlock()
	if c == nil {
		return
	}
	b, _ := json.Marshal(st)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Publish(pctx, mqtt.ConfigStatusTopic(id), true, b); err != nil {
		a.log.Debug("config status not published yet", "err", err)
	}
}

// ConfigStatus is what runs: the remote documents' status, or the local file's digest.
func (a *Agent) ConfigStatus() remoteconfig.Status {
	if a.remote != nil {
		return a.remote.m.Status()
	}
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	return remoteconfig.Status{State: remoteconfig.StateApplied, Source: remoteconfig.SourceLocal, ConfigSHA256: cfg.Digest()}
}

// ProbeLink tries the upload link as cfg configures it, with its TLS settings and
// token: OPTIONS on the endpoint (a tus server), then HEAD of an upload that cannot
// exist (the server must know us: 404, not 401/403). nil means the link works.
func ProbeLink(ctx context.Context, cfg *config.Config) error {
	client, err := httpClient(cfg.Upload.TLS)
	if err != nil {
		return err
	}
	client.Timeout = 15 * time.Second
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	token := tokenReader(cfg.Upload.BearerTokenFile, slog.New(slog.DiscardHandler))
	do := func(method, url string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Tus-Resumable", "1.0.0")
		if token != nil {
			if t := token(); t != "" {
				req.Header.Set("Authorization", "Bearer "+t)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		return resp, nil
	}
	resp, err := do(http.MethodOptions, cfg.Upload.Endpoint)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 || resp.Header.Get("Tus-Version") == "" {
		return fmt.Errorf("OPTIONS on upload.endpoint: %s, not a tus server", resp.Status)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	resp, err = do(http.MethodHead, joinEndpoint(cfg.Upload.Endpoint, "courier-probe-"+hex.EncodeToString(rnd[:])))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("the server refused this agent's credentials (%s)", resp.Status)
	case resp.StatusCode >= 500:
		return fmt.Errorf("server error %s", resp.Status)
	}
	return nil
}

func joinEndpoint(ep, id string) string {
	if len(ep) > 0 && ep[len(ep)-1] == '/' {
		return ep + id
	}
	return ep + "/" + id
}

// Reload is SIGHUP's path: the local file changed. With remote configuration on, the
// applied documents are layered on the new file again before it is applied.
func (a *Agent) Reload(ctx context.Context, local *config.Config) error {
	if a.remote == nil {
		return a.Apply(ctx, local, "sighup")
	}
	a.remote.mu.Lock()
	a.remote.local = local
	a.remote.mu.Unlock()
	return a.remote.m.Refresh(ctx, local)
}
