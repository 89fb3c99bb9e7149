package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `courier config validate [--strict] FILE`, through the same code path as the
// binary: exit 0 with warnings printed, 2 with --strict, 2 on an error.
func TestConfigValidateStrict(t *testing.T) {
	dir := t.TempDir()
	inbox := filepath.Join(dir, "inbox")
	if err := os.Mkdir(inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	head := "agent: {id: a1, data_dir: " + filepath.Join(dir, "data") + "}\nupload: {endpoint: \"https://i.example.org/files/\"}\n"
	clean := write("clean.yaml", head+"sources: [{name: in, kind: folder, path: "+inbox+"}]\n")
	warned := write("warned.yaml", head+"sources: [{name: in, kind: folder, path: "+filepath.Join(dir, "not-yet")+"}]\n")
	broken := write("broken.yaml", head+"sources: [{name: in, kind: folder, path: "+inbox+", settle: -2s}]\n")

	cases := []struct {
		name       string
		args       []string
		code       int
		out, errs  string
		notInError string
	}{
		{"clean", []string{clean}, 0, clean + ": valid (agent a1, 1 source(s)", "", "warning"},
		{"clean strict", []string{"--strict", clean}, 0, clean + ": valid", "", "warning"},
		{"warning", []string{warned}, 0, warned + ": valid", "courier: warning: " + warned + ": sources[0].path: folder", ""},
		{"warning strict", []string{"--strict", warned}, 2, "", "courier: invalid config (--strict): " + warned + ": sources[0].path: folder", ""},
		{"strict after the file", []string{warned, "--strict"}, 2, "", warned + ": 0 error(s), 1 warning(s)", ""},
		{"error", []string{broken}, 2, "", "courier: invalid config: " + broken + `: sources[0].settle: must be > 0, got "-2s"`, ""},
		{"missing file", []string{filepath.Join(dir, "nope.yaml")}, 2, "", "nope.yaml: cannot read: no such file or directory", ""},
		{"no file", nil, 2, "", "want exactly one FILE", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			code := run(append([]string{"config", "validate"}, tc.args...), &out, &errs)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errs.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("stdout %q lacks %q", out.String(), tc.out)
			}
			if !strings.Contains(errs.String(), tc.errs) {
				t.Errorf("stderr %q lacks %q", errs.String(), tc.errs)
			}
			if tc.notInError != "" && strings.Contains(errs.String(), tc.notInError) {
				t.Errorf("stderr %q has %q", errs.String(), tc.notInError)
			}
		})
	}
}
