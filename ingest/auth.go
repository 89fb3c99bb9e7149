package ingest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
)

var (
	errNoCredential  = errors.New("no credential: send Authorization: Bearer <token> or a client certificate")
	errBadCredential = errors.New("unknown token")
)

// tokens is the parsed --tokens file: one "agent-id token" a line.
type tokens struct {
	mu      sync.RWMutex
	entries []tokenEntry
}

type tokenEntry struct {
	agent string
	// sum is the SHA-256 of the token: comparing fixed-length sums in
	// constant time does not leak the token's length either.
	sum [sha256.Size]byte
}

func loadTokens(path string) ([]tokenEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens %s: %w", path, err)
	}
	var out []tokenEntry
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("tokens %s: line %d: want \"agent-id token\", got %d fields", path, line, len(fields))
		}
		if seen[fields[1]] {
			return nil, fmt.Errorf("tokens %s: line %d: token of %s is used twice", path, line, fields[0])
		}
		seen[fields[1]] = true
		out = append(out, tokenEntry{agent: fields[0], sum: sha256.Sum256([]byte(fields[1]))})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens %s: %w", path, err)
	}
	return out, nil
}

func (t *tokens) set(e []tokenEntry) {
	t.mu.Lock()
	t.entries = e
	t.mu.Unlock()
}

// agentOf returns the agent whose token this is. Every entry is compared so
// the time taken does not depend on which one matched.
func (t *tokens) agentOf(token string) (string, bool) {
	sum := sha256.Sum256([]byte(token))
	t.mu.RLock()
	defer t.mu.RUnlock()
	agent, found := "", false
	for _, e := range t.entries {
		if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 {
			agent, found = e.agent, true
		}
	}
	return agent, found
}

// identity returns who sent r: the CN of a verified client certificate, or
// the agent whose bearer token it carries.
func (s *Server) identity(r *http.Request) (string, error) {
	if r.TLS != nil && s.clientCAs != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		if cn := r.TLS.VerifiedChains[0][0].Subject.CommonName; cn != "" {
			return cn, nil
		}
	}
	if s.opts.Tokens != "" {
		auth := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(auth, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(tok) != "" {
			if agent, found := s.tokens.agentOf(strings.TrimSpace(tok)); found {
				return agent, nil
			}
			return "", errBadCredential
		}
	}
	return "", errNoCredential
}

// ReloadTokens reads the tokens file again (courier-ingest does on SIGHUP).
// On error the tokens in force stay.
func (s *Server) ReloadTokens() error {
	if s.opts.Tokens == "" {
		return nil
	}
	e, err := loadTokens(s.opts.Tokens)
	if err != nil {
		return err
	}
	s.tokens.set(e)
	s.log.Info("tokens loaded", "agents", len(e))
	return nil
}

// ConfigureTLS makes cfg ask for client certificates signed by ClientCA
// (optional at the TLS layer, so token users still connect; the handler
// decides). Without ClientCA it leaves cfg alone.
func (s *Server) ConfigureTLS(cfg *tls.Config) {
	if s.clientCAs == nil {
		return
	}
	cfg.ClientCAs = s.clientCAs
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
}

func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client CA %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA %s: no PEM certificate found", path)
	}
	return pool, nil
}
