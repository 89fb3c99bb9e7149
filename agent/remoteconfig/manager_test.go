package remoteconfig

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecourier/courier/agent/config"
)

// rig drives a Manager directly (no goroutine): the agent's side is recorded.
type rig struct {
	t        *testing.T
	m        *Manager
	key      []byte
	mu       sync.Mutex
	applied  []string // endpoint of every config applied
	statuses []Status
	linkDown map[string]bool // endpoint → probe fails
}

func newRig(t *testing.T, dir string, groups []string) (*rig, func(target string, v int64, endpoint string) string) {
	keyDir := filepath.Join(dir, "keys")
	os.MkdirAll(keyDir, 0o700)
	var priv ed25519.PrivateKey
	var pub string
	if b, err := os.ReadFile(filepath.Join(keyDir, "central.pub")); err == nil {
		pub = strings.TrimSpace(string(b))
		priv, _ = LoadPrivateKey(filepath.Join(keyDir, "central.key"))
	} else {
		priv, pub = newKey(t, keyDir, "central")
	}
	ver, err := NewVerifier([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, linkDown: map[string]bool{}}
	m, err := New(Options{
		AgentID: "clinic-042", Groups: groups, Verifier: ver, Store: NewStore(dir), Probation: time.Hour,
		Merge: func(docs []Document) (*config.Config, error) {
			cfg := &config.Config{Upload: config.Upload{Endpoint: "http://local/"}}
			for _, d := range docs {
				var c struct {
					Upload struct{ Endpoint string } `json:"upload"`
				}
				json.Unmarshal(d.Config, &c)
				if c.Upload.Endpoint == "invalid" {
					return nil, errors.New("merged config does not validate: upload.endpoint: bad")
				}
				if c.Upload.Endpoint != "" {
					cfg.Upload.Endpoint = c.Upload.Endpoint
				}
			}
			return cfg, nil
		},
		Apply: func(_ context.Context, cfg *config.Config, _ string) error {
			r.applied = append(r.applied, cfg.Upload.Endpoint)
			return nil
		},
		Probe: func(_ context.Context, cfg *config.Config) error {
			if r.linkDown[cfg.Upload.Endpoint] {
				return errors.New("connection refused")
			}
			return nil
		},
		Digest:  func(cfg *config.Config) string { return "sha-" + cfg.Upload.Endpoint },
		Publish: func(_ context.Context, st Status) { r.statuses = append(r.statuses, st) },
	})
	if err != nil {
		t.Fatal(err)
	}
	r.m = m
	sign := func(target string, v int64, endpoint string) string {
		jws, err := Sign(priv, Document{Version: v, IssuedAt: time.Now(), Target: target,
			Config: json.RawMessage(`{"upload":{"endpoint":"` + endpoint + `"}}`)})
		if err != nil {
			t.Fatal(err)
		}
		return jws
	}
	return r, sign
}

func (r *rig) last() Status {
	r.t.Helper()
	if len(r.statuses) == 0 {
		r.t.Fatal("no status published")
	}
	return r.statuses[len(r.statuses)-1]
}

func TestManagerLayersAppliesAndRejects(t *testing.T) {
	dir := t.TempDir()
	r, sign := newRig(t, dir, []string{"north"})
	ctx := context.Background()
	r.m.Startup(&config.Config{Upload: config.Upload{Endpoint: "http://local/"}})

	group := sign("group:north", 1, "http://group/")
	r.m.handle(ctx, []byte(group))
	if st := r.last(); st.State != StateApplied || st.ConfigSHA256 != "sha-http://group/" || st.Source != SourceRemote {
		t.Fatalf("group push: %+v", st)
	}
	own := sign("agent:clinic-042", 1, "http://own/")
	r.m.handle(ctx, []byte(own))
	if st := r.last(); st.ConfigSHA256 != "sha-http://own/" || st.Applied["group:north"] != 1 || st.Applied["agent:clinic-042"] != 1 {
		t.Fatalf("the agent's own document must win over its group's: %+v", st)
	}
	// A newer group document changes nothing the agent's own one sets.
	r.m.handle(ctx, []byte(sign("group:north", 2, "http://group2/")))
	if st := r.last(); st.ConfigSHA256 != "sha-http://own/" {
		t.Fatalf("group v2 must not override the agent's document: %+v", st)
	}

	n := len(r.statuses)
	r.m.handle(ctx, []byte(own)) // the broker redelivers the retained document
	if len(r.statuses) != n {
		t.Fatalf("a redelivered document must be silent, got %+v", r.last())
	}
	for _, tc := range []struct{ name, jws, want string }{
		{"replayed older version", sign("agent:clinic-042", 1, "http://old/"), "is not newer than version 1"},
		{"wrong target", sign("agent:clinic-999", 9, "http://x/"), "is not this agent"},
		{"does not validate", sign("agent:clinic-042", 5, "invalid"), "upload.endpoint: bad"},
		{"garbage", "garbage", "not a compact JWS"},
	} {
		r.m.handle(ctx, []byte(tc.jws))
		st := r.last()
		if st.State != StateRejected || !strings.Contains(st.Error, tc.want) || st.ConfigSHA256 != "sha-http://own/" {
			t.Errorf("%s: %+v", tc.name, st)
		}
	}
	if got := r.applied; len(got) != 3 {
		t.Fatalf("applies: %v", got)
	}

	// A restart with the broker down comes up on the saved documents.
	r2, _ := newRig(t, dir, []string{"north"})
	cfg := r2.m.Startup(&config.Config{Upload: config.Upload{Endpoint: "http://local/"}})
	if cfg.Upload.Endpoint != "http://own/" || r2.m.Status().Source != SourceLastKnownGood {
		t.Fatalf("last-known-good: %s %+v", cfg.Upload.Endpoint, r2.m.Status())
	}
}

func TestManagerRevertsWhenTheLinkBreaks(t *testing.T) {
	dir := t.TempDir()
	r, sign := newRig(t, dir, nil)
	ctx := context.Background()
	r.m.Startup(&config.Config{Upload: config.Upload{Endpoint: "http://local/"}})
	r.m.handle(ctx, []byte(sign("agent:clinic-042", 1, "http://good/")))
	r.m.watch(ctx) // probation passes for the good one once its probe works... keep it going
	bad := sign("agent:clinic-042", 2, "http://dead/")
	r.linkDown["http://dead/"] = true
	r.m.handle(ctx, []byte(bad))
	for i := 0; i < 3; i++ {
		r.m.watch(ctx)
	}
	st := r.last()
	if st.State != StateReverted || !strings.Contains(st.Error, "connection refused") || st.ConfigSHA256 != "sha-http://good/" {
		t.Fatalf("want reverted to the good config: %+v", st)
	}
	if got := r.applied[len(r.applied)-1]; got != "http://good/" {
		t.Fatalf("last applied %s", got)
	}
	n := len(r.statuses)
	r.m.handle(ctx, []byte(bad)) // still retained at the broker
	if len(r.statuses) != n {
		t.Fatalf("a reverted document must not be applied or reported again: %+v", r.last())
	}
	// Nor after a restart.
	r2, _ := newRig(t, dir, nil)
	if cfg := r2.m.Startup(&config.Config{Upload: config.Upload{Endpoint: "http://local/"}}); cfg.Upload.Endpoint != "http://good/" {
		t.Fatalf("after restart: %s", cfg.Upload.Endpoint)
	}
	r2.m.handle(ctx, []byte(bad))
	if st := r2.last(); st.State != StateRejected || len(r2.applied) != 0 {
		t.Fatalf("reverted document after restart: %+v applied %v", st, r2.applied)
	}
}

func TestNoProbationWhenTheLinkWasAlreadyDown(t *testing.T) {
	r, sign := newRig(t, t.TempDir(), nil)
	ctx := context.Background()
	r.linkDown["http://local/"] = true
	r.linkDown["http://fix/"] = true
	r.m.Startup(&config.Config{Upload: config.Upload{Endpoint: "http://local/"}})
	r.m.handle(ctx, []byte(sign("agent:clinic-042", 1, "http://fix/")))
	for i := 0; i < 5; i++ {
		r.m.watch(ctx)
	}
	if st := r.last(); st.State != StateApplied {
		t.Fatalf("nothing worked before, so nothing to go back to: %+v", st)
	}
}
