package remoteconfig

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// KeyID names a public key: the first 16 hex digits of the SHA-256 of its 32 bytes.
// It travels as the JWS `kid`, so an agent can say which key signed a document it refused.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// ParsePublicKey reads one base64 line (standard or URL alphabet, padding optional)
// holding a 32-byte ed25519 public key, as written by Keygen and listed in
// remote_config.trusted_keys.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("ed25519 public key must be %d bytes, got %d", ed25519.PublicKeySize, len(b))
			}
			return ed25519.PublicKey(b), nil
		}
	}
	return nil, errors.New("not base64: want the one line of a PREFIX.pub written by `courier keygen`")
}

// Keygen writes a new ed25519 pair: PREFIX.key (PKCS#8 PEM, 0600) and PREFIX.pub (one
// base64 line). It never overwrites an existing key: losing a signing key by a typo in
// a command line would strand a fleet. It returns the public key's line and its id.
func Keygen(prefix string) (pubLine, kid string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("keygen: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", fmt.Errorf("keygen: %w", err)
	}
	keyPath, pubPath := prefix+".key", prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("keygen: %s exists; refusing to overwrite a key (choose another --out)", p)
		}
	}
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("keygen: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return "", "", fmt.Errorf("keygen: write %s: %w", keyPath, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", "", fmt.Errorf("keygen: write %s: %w", keyPath, err)
	}
	if err := f.Close(); err != nil {
		return "", "", fmt.Errorf("keygen: write %s: %w", keyPath, err)
	}
	pubLine = base64.StdEncoding.EncodeToString(pub)
	if err := os.WriteFile(pubPath, []byte(pubLine+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("keygen: write %s: %w", pubPath, err)
	}
	return pubLine, KeyID(pub), nil
}

// LoadPrivateKey reads a PREFIX.key written by Keygen. On Unix it refuses a file that
// group or others can read: a signing key is the fleet's master key.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s is readable by group or others (mode %04o): run `chmod 600 %s`", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: not a PEM PRIVATE KEY (want a PREFIX.key from `courier keygen`)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an ed25519 key", path)
	}
	return ek, nil
}
