package remoteconfig

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func newKey(t *testing.T, dir, name string) (ed25519.PrivateKey, string) {
	t.Helper()
	prefix := filepath.Join(dir, name)
	pub, kid, err := Keygen(prefix)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePublicKey(pub)
	if err != nil || KeyID(k) != kid {
		t.Fatalf("public key line %q: %v (kid %s)", pub, err, kid)
	}
	priv, err := LoadPrivateKey(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func doc(target string, version int64) Document {
	return Document{Version: version, IssuedAt: time.Now().UTC(), Target: target,
		Config: json.RawMessage(`{"upload":{"concurrency":2}}`)}
}

func TestKeygenFiles(t *testing.T) {
	dir := t.TempDir()
	newKey(t, dir, "central")
	fi, err := os.Stat(filepath.Join(dir, "central.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("central.key mode: %v %v", fi.Mode(), err)
	}
	if _, _, err := Keygen(filepath.Join(dir, "central")); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second keygen with the same prefix: %v", err)
	}
	os.Chmod(filepath.Join(dir, "central.key"), 0o644)
	if _, err := LoadPrivateKey(filepath.Join(dir, "central.key")); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable signing key must be refused: %v", err)
	}
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	k1, pub1 := newKey(t, dir, "k1")
	k2, pub2 := newKey(t, dir, "k2")
	other, _ := newKey(t, dir, "other")
	now := time.Now()

	good, err := Sign(k1, doc("agent:clinic-042", 3))
	if err != nil {
		t.Fatal(err)
	}
	rotated, _ := Sign(k2, doc("group:north", 1))
	wrongKey, _ := Sign(other, doc("agent:clinic-042", 4))
	past := now.Add(-time.Minute)
	d := doc("agent:clinic-042", 5)
	d.ExpiresAt = &past
	expired, _ := Sign(k1, d)

	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	edited := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"concurrency":2`, `"concurrency":9`, 1))) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	hsObj, _ := hs.Sign(payload)
	hs256, _ := hsObj.CompactSerialize()

	v, err := NewVerifier([]string{pub1, pub2})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, jws, want string
	}{
		{"good", good, ""},
		{"second trusted key (rotation)", rotated, ""},
		{"wrong key", wrongKey, "which is not in remote_config.trusted_keys"},
		{"payload edited after signing", edited, "the document was changed after signing"},
		{"expired", expired, "version 5 expired at"},
		{"garbage", "hello", "not a compact JWS"},
		{"alg none", none, `algorithm "none" is not accepted`},
		{"HS256", hs256, `algorithm "HS256" is not accepted`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify([]byte(tc.jws), now)
			if tc.want == "" {
				if err != nil || got == nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestCheckTarget(t *testing.T) {
	for _, tc := range []struct {
		target string
		ok     bool
	}{{"agent:clinic-042", true}, {"agent:clinic-999", false}, {"group:north", true}, {"group:south", false}} {
		d := doc(tc.target, 1)
		err := CheckTarget(&d, "clinic-042", []string{"north"})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.target, err)
		}
	}
	if _, err := ParseTarget("agent:a/b"); err == nil {
		t.Error("a target with '/' must be refused")
	}
	if got := (Target{"group", "north"}).Topic(); got != "courier/groups/north/config" {
		t.Errorf("group topic %q", got)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir)
	st, err := s.Load()
	if err != nil || len(st.Applied) != 0 {
		t.Fatalf("empty state: %+v %v", st, err)
	}
	st = st.With(Applied{Target: "group:north", Version: 2, JWS: "x"})
	st = st.With(Applied{Target: "agent:a", Version: 7, JWS: "y"})
	st.RaiseFloor("agent:a", 9) // a reverted document
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := NewStore(dir).Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Version("agent:a") != 7 || got.Floor["agent:a"] != 9 || got.Floor["group:north"] != 2 {
		t.Fatalf("state after reload: %+v", got)
	}
	fi, _ := os.Stat(filepath.Join(dir, "remote-config", "state.json"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state.json mode %v", fi.Mode())
	}
}
