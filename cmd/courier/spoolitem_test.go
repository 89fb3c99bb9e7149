package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecourier/courier/spool"
)

// seedSpool spools n small items named SECRET-<i>.hl7 and returns their ids.
func seedSpool(t *testing.T, dir string, n int) []string {
	t.Helper()
	ctx := context.Background()
	s, err := spool.Open(ctx, spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	for i := range n {
		it, err := s.Receive(ctx, spool.Intake{Source: "lab", Filename: fmt.Sprintf("SECRET-%d.hl7", i)}, strings.NewReader(strings.Repeat("x", 2048+i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, it.ID)
	}
	return ids
}

// uniquePrefix is the shortest prefix of ids[i] no other id shares.
func uniquePrefix(ids []string, i int) string {
	for n := 1; n <= len(ids[i]); n++ {
		p, ok := ids[i][:n], true
		for j, o := range ids {
			if j != i && strings.HasPrefix(o, p) {
				ok = false
			}
		}
		if ok {
			return p
		}
	}
	return ids[i]
}

func TestSpoolLsShowPrefixes(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	ids := seedSpool(t, dir, 3)

	code, out, errs := runCLI(t, "spool", "ls", "--config", cfg)
	if code != 0 || !strings.Contains(out, "2.0 KiB") || !strings.Contains(out, "ATTEMPTS") || strings.Count(out, "\n") != 4 {
		t.Fatalf("spool ls: %d\n%s%s", code, out, errs)
	}
	if strings.Contains(out, "SECRET") {
		t.Fatalf("spool ls shows a file name privacy does not allow:\n%s", out)
	}

	p := uniquePrefix(ids, 1)
	code, out, errs = runCLI(t, "spool", "show", p, "--config", cfg)
	if code != 0 || !strings.Contains(out, ids[1]) || !strings.Contains(out, "upload:") || !strings.Contains(out, "attempts:") || strings.Contains(out, "SECRET") {
		t.Fatalf("spool show %s: %d\n%s%s", p, code, out, errs)
	}
	code, out, _ = runCLI(t, "spool", "show", "--json", "--config", cfg, p)
	var v itemView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.ID != ids[1] || v.Size != 2049 {
		t.Fatalf("spool show --json: %d\n%s", code, out)
	}
	// The empty prefix matches all three: ambiguous, exit 2, naming the count.
	if code, _, errs := runCLI(t, "spool", "show", "--config", cfg, ""); code != 2 || !strings.Contains(errs, "matches 3 items") {
		t.Fatalf("ambiguous prefix: %d %s", code, errs)
	}
	if code, _, errs := runCLI(t, "spool", "show", "--config", cfg, "zzzz-none"); code != 1 || !strings.Contains(errs, "no item") {
		t.Fatalf("unknown id: %d %s", code, errs)
	}
	if code, _, errs := runCLI(t, "spool", "retry", "--config", cfg, "zzzz-none"); code != 1 || !strings.Contains(errs, "no item") {
		t.Fatalf("retry unknown id: %d %s", code, errs)
	}
}

func TestSpoolLsFilenamesWhenAllowed(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(b, []byte("privacy: {send_filenames: true}\n")...), 0o600)
	seedSpool(t, dir, 1)
	code, out, errs := runCLI(t, "spool", "ls", "--config", cfg)
	if code != 0 || !strings.Contains(out, "lab/SECRET-0.hl7") {
		t.Fatalf("spool ls with send_filenames: %d\n%s%s", code, out, errs)
	}
}

func TestSpoolExport(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	ids := seedSpool(t, dir, 2)
	outDir := t.TempDir()

	code, out, errs := runCLI(t, "spool", "export", "--config", cfg, uniquePrefix(ids, 0), outDir)
	want := filepath.Join(outDir, ids[0])
	if code != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("export: %d\n%s%s", code, out, errs)
	}
	st, err := os.Stat(want)
	if err != nil || st.Size() != 2048 || (st.Mode().Perm() != 0o600 && os.PathSeparator == '/') {
		t.Fatalf("exported file: %v %v", st, err)
	}
	if code, _, errs := runCLI(t, "spool", "export", "--config", cfg, ids[0], outDir); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("export over an existing file: %d %s", code, errs)
	}
	// Damaged bytes are refused; nothing is left behind.
	content := filepath.Join(dir, "content", ids[1][len(ids[1])-2:], ids[1])
	os.WriteFile(content, []byte("other"), 0o600)
	if code, _, errs := runCLI(t, "spool", "export", "--config", cfg, ids[1], outDir); code != 1 || !strings.Contains(errs, "spool verify") {
		t.Fatalf("export of damaged bytes: %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(outDir, ids[1])); !os.IsNotExist(err) {
		t.Fatalf("damaged export left a file: %v", err)
	}
	os.Remove(content)
	if code, _, errs := runCLI(t, "spool", "export", "--config", cfg, ids[1], outDir); code != 1 || !strings.Contains(errs, "courier spool verify") {
		t.Fatalf("export of missing content: %d %s", code, errs)
	}
}
