package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/edgecourier/courier/spool"
)

// writeConfig writes a minimal agent config whose data_dir is dir.
func writeConfig(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "courier.yaml")
	inbox := t.TempDir()
	cfg := fmt.Sprintf("agent: {id: test, data_dir: %q}\nupload: {endpoint: \"http://127.0.0.1:9/files/\"}\nsources: [{name: inbox, kind: folder, path: %q}]\nevents: {mqtt: false}\n", dir, inbox)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestSpoolVerifyAndRecover runs the operator's path after a lost database: the CLI
// refuses and names the recovery command, recover brings the rows back, verify says
// the spool is whole, and names an item whose bytes were damaged.
func TestSpoolVerifyAndRecover(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	s, err := spool.Open(ctx, spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		it, err := s.Receive(ctx, spool.Intake{Source: "lab"}, strings.NewReader(fmt.Sprint("file ", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, it.ID)
	}
	s.Close()

	if code, out, errs := runCLI(t, "spool", "verify", "--config", cfg); code != 0 || !strings.Contains(out, "problems: 0") {
		t.Fatalf("verify of a healthy spool: %d\n%s%s", code, out, errs)
	}
	if err := os.Truncate(filepath.Join(dir, "spool.db"), 0); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, "spool", "ls", "--config", cfg)
	if code != 1 || !strings.Contains(errs, "courier spool recover") {
		t.Fatalf("spool ls on a lost database: %d %s", code, errs)
	}
	if code, out, _ := runCLI(t, "spool", "verify", "--config", cfg); code != 1 || !strings.Contains(out, "database lost") {
		t.Fatalf("verify of a lost database: %d\n%s", code, out)
	}
	code, out, errs := runCLI(t, "spool", "recover", "--config", cfg)
	if code != 0 || !strings.Contains(out, "3 item(s) rebuilt") {
		t.Fatalf("recover: %d\n%s%s", code, out, errs)
	}
	code, out, _ = runCLI(t, "spool", "ls", "--config", cfg, "--json")
	var items []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 3 {
		t.Fatalf("spool ls after recover: %d\n%s", code, out)
	}
	if code, out, _ := runCLI(t, "spool", "verify", "--config", cfg); code != 0 {
		t.Fatalf("verify after recover: %d\n%s", code, out)
	}
	// Damaged bytes are named, and nothing is deleted.
	damaged := filepath.Join(dir, "content", ids[1][len(ids[1])-2:], ids[1])
	if err := os.WriteFile(damaged, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "spool", "verify", "--config", cfg)
	if code != 1 || !strings.Contains(out, ids[1]+": content differs") {
		t.Fatalf("verify with damaged bytes: %d\n%s", code, out)
	}
	if b, err := os.ReadFile(damaged); err != nil || string(b) != "other" {
		t.Fatalf("verify changed the damaged file: %v", err)
	}
}

// TestAuditVerifyAndExport: the trail verifies, exports as JSON lines, and a row
// changed behind the triggers' back is named.
func TestAuditVerifyAndExport(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	s, err := spool.Open(ctx, spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := s.Receive(ctx, spool.Intake{Source: "lab"}, strings.NewReader(fmt.Sprint("f", i))); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.Lease(ctx, "w", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.MarkVerified(ctx, l.ID, "w", "loc")
	s.Close()

	if code, out, errs := runCLI(t, "audit", "verify", "--config", cfg); code != 0 || !strings.Contains(out, "intact: 4 rows") {
		t.Fatalf("audit verify: %d\n%s%s", code, out, errs)
	}
	code, out, errs := runCLI(t, "audit", "export", "--config", cfg, "--since", "1h")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 {
		t.Fatalf("audit export: %d, %d lines\n%s%s", code, len(lines), out, errs)
	}
	var r spool.AuditRecord
	if err := json.Unmarshal([]byte(lines[3]), &r); err != nil || r.To != spool.StateVerified || r.Actor != spool.ActorUploader {
		t.Fatalf("last exported row: %+v, %v", r, err)
	}
	if code, out, _ := runCLI(t, "audit", "export", "--config", cfg, "--since", "1h", "--until", "2h"); code != 2 {
		t.Fatalf("export with until before since: %d %s", code, out)
	}

	db, err := sql.Open("sqlite", filepath.Join(dir, "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TRIGGER audit_append_only`, `UPDATE audit SET actor = 'cli' WHERE seq = 2`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if code, out, _ := runCLI(t, "audit", "verify", "--config", cfg); code != 1 || !strings.Contains(out, "broken at row 2") {
		t.Fatalf("audit verify after tampering: %d\n%s", code, out)
	}
}
