package remoteconfig

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// MediaType is the JWS `typ` of a Courier configuration document.
const MediaType = "courier-config+jws"

// Document is the signed payload: the contract's {"version", "issued_at", "expires_at",
// "target", "config"}. Config holds keys of the local file (sources, upload, …) as JSON.
type Document struct {
	Version   int64           `json:"version"`
	IssuedAt  time.Time       `json:"issued_at"`
	ExpiresAt *time.Time      `json:"expires_at,omitempty"`
	Target    string          `json:"target"`
	Config    json.RawMessage `json:"config"`
}

// Target is a parsed `agent:<id>` or `group:<name>`.
type Target struct {
	Kind string // "agent" or "group"
	Name string
}

func (t Target) String() string { return t.Kind + ":" + t.Name }

// ParseTarget reads `agent:<id>` or `group:<name>`. Names are MQTT topic levels, so
// they must not hold '/', '+' or '#'.
func ParseTarget(s string) (Target, error) {
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "agent" && kind != "group") || name == "" {
		return Target{}, fmt.Errorf("target %q: want agent:<id> or group:<name>", s)
	}
	if strings.ContainsAny(name, "/+#") {
		return Target{}, fmt.Errorf("target %q: a name must not contain '/', '+' or '#'", s)
	}
	return Target{Kind: kind, Name: name}, nil
}

// Topic is where central IT publishes (retained) a document for this target.
func (t Target) Topic() string {
	if t.Kind == "group" {
		return "courier/groups/" + t.Name + "/config"
	}
	return "courier/" + t.Name + "/config"
}

// Sign wraps doc in a compact JWS signed with key (alg EdDSA, kid = KeyID, typ
// courier-config+jws).
func Sign(key ed25519.PrivateKey, doc Document) (string, error) {
	if _, err := ParseTarget(doc.Target); err != nil {
		return "", err
	}
	if doc.Version <= 0 {
		return "", fmt.Errorf("version must be a positive integer, got %d", doc.Version)
	}
	if len(doc.Config) == 0 || !json.Valid(doc.Config) || doc.Config[0] != '{' {
		return "", errors.New("config must be a JSON object")
	}
	payload, err := json.Marshal(doc)
	if err != nil {
		return "", err
	}
	opts := (&jose.SignerOptions{}).WithType(MediaType).WithHeader(jose.HeaderKey("kid"), KeyID(key.Public().(ed25519.PublicKey)))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return obj.CompactSerialize()
}

// Verifier checks documents against the agent's remote_config.trusted_keys.
type Verifier struct {
	keys map[string]ed25519.PublicKey // kid → key
}

// NewVerifier takes the base64 lines of remote_config.trusted_keys. Several keys may
// be trusted at once, so a new one can be rolled out before the old one is retired.
func NewVerifier(trusted []string) (*Verifier, error) {
	v := &Verifier{keys: map[string]ed25519.PublicKey{}}
	for i, s := range trusted {
		k, err := ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("remote_config.trusted_keys[%d]: %w", i, err)
		}
		v.keys[KeyID(k)] = k
	}
	return v, nil
}

// KeyIDs lists the trusted keys' ids, sorted.
func (v *Verifier) KeyIDs() []string {
	ids := make([]string, 0, len(v.keys))
	for id := range v.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Verify parses a compact JWS, checks that a trusted key signed it with EdDSA and that
// it has not expired at now, and returns its document. The errors are meant for a
// person reading the agent's config/status: they say what was wrong in their words.
func (v *Verifier) Verify(jws []byte, now time.Time) (*Document, error) {
	text := strings.TrimSpace(string(jws))
	parts := strings.Split(text, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a compact JWS (want three base64url parts separated by '.', got %d)", len(parts))
	}
	hdrJSON, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, errors.New("not a compact JWS: the header is not base64url")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		return nil, errors.New("not a compact JWS: the header is not JSON")
	}
	if hdr.Alg != string(jose.EdDSA) {
		return nil, fmt.Errorf("algorithm %q is not accepted: only EdDSA (ed25519) signatures are", hdr.Alg)
	}
	obj, err := jose.ParseSignedCompact(text, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("not a valid JWS: %v", err)
	}
	key, ok := v.keys[hdr.Kid]
	if !ok {
		if len(v.keys) == 0 {
			return nil, errors.New("no trusted keys: remote_config.trusted_keys is empty")
		}
		// A kid is only a hint: try every trusted key before refusing.
		for _, k := range v.keys {
			if _, err := obj.Verify(k); err == nil {
				key = k
				break
			}
		}
		if key == nil {
			return nil, fmt.Errorf("signed with key %s, which is not in remote_config.trusted_keys", orUnnamed(hdr.Kid))
		}
	}
	payload, err := obj.Verify(key)
	if err != nil {
		return nil, fmt.Errorf("signature does not verify with trusted key %s: the document was changed after signing, or signed with another key", KeyID(key))
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var doc Document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("payload is not a configuration document: %v", err)
	}
	if _, err := ParseTarget(doc.Target); err != nil {
		return nil, err
	}
	if doc.Version <= 0 {
		return nil, fmt.Errorf("version must be a positive integer, got %d", doc.Version)
	}
	if len(doc.Config) == 0 || doc.Config[0] != '{' {
		return nil, errors.New("config must be a JSON object")
	}
	if doc.ExpiresAt != nil && !now.Before(*doc.ExpiresAt) {
		return nil, fmt.Errorf("version %d expired at %s", doc.Version, doc.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return &doc, nil
}

func orUnnamed(kid string) string {
	if kid == "" {
		return "(no kid)"
	}
	return kid
}

// CheckTarget says whether doc is meant for this agent: its own id, or one of its groups.
func CheckTarget(doc *Document, agentID string, groups []string) error {
	t, err := ParseTarget(doc.Target)
	if err != nil {
		return err
	}
	switch {
	case t.Kind == "agent" && t.Name == agentID:
		return nil
	case t.Kind == "group" && slices.Contains(groups, t.Name):
		return nil
	}
	return fmt.Errorf("target %s is not this agent (%s) or one of its groups", doc.Target, agentID)
}
