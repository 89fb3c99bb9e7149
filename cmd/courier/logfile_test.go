package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecourier/courier/agent/config"
)

// TestLogFile: with log.file set, a record goes to stderr and to the file, and the
// config loader accepts the key.
func TestLogFile(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "courier.log")
	p := writeConfig(t, dir)
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, append(b, []byte("log: {file: "+logPath+", level: debug}\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	log := newLogger(cfg, &stderr)
	log.Debug("hello file", "n", 7)
	got, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("log.file not written: %v", err)
	}
	var rec map[string]any
	if err := json.Unmarshal(got, &rec); err != nil || rec["msg"] != "hello file" || rec["n"] != float64(7) {
		t.Fatalf("log.file holds %q (%v)", got, err)
	}
	if !strings.Contains(stderr.String(), "hello file") {
		t.Fatalf("stderr lost the record: %q", stderr.String())
	}
	if st, err := os.Stat(logPath); err == nil && os.PathSeparator == '/' && st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("log.file is readable by others: %v", st.Mode())
	}
}
