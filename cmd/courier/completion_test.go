package main

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// bashComplete runs the bash script's completion function on words and returns its
// answers.
func bashComplete(t *testing.T, script string, words ...string) []string {
	t.Helper()
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + w + "'"
	}
	prog := script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" + strconv.Itoa(len(words)-1) + "\n_courier\necho \"${COMPREPLY[@]}\"\n"
	out, err := exec.Command("bash", "--norc", "-c", prog).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func TestCompletion(t *testing.T) {
	code, script, errs := runCLI(t, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: %d %s", code, errs)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("bash is needed for this test")
	}
	if got := bashComplete(t, script, "courier", "sp"); strings.Join(got, " ") != "spool" {
		t.Fatalf("courier sp<TAB>: %v", got)
	}
	if got := strings.Join(bashComplete(t, script, "courier", "spool", ""), " "); got != "ls show retry export verify recover" {
		t.Fatalf("courier spool <TAB>: %v", got)
	}
	if got := strings.Join(bashComplete(t, script, "courier", "spool", "retry", "--d"), " "); got != "--dry-run" {
		t.Fatalf("courier spool retry --d<TAB>: %v", got)
	}
	if got := strings.Join(bashComplete(t, script, "courier", "spool", "ls", "--state", "qu"), " "); got != "quarantined" {
		t.Fatalf("courier spool ls --state qu<TAB>: %v", got)
	}
	// Every sub-command the CLI dispatches is offered by every shell's script.
	for _, sh := range []string{"bash", "zsh", "fish"} {
		_, s, _ := runCLI(t, "completion", sh)
		for _, c := range []string{"dev", "run", "status", "spool", "events", "config", "audit", "keygen", "mllp", "service", "completion", "version", "export", "dry-run", "quarantined"} {
			if !strings.Contains(s, c) {
				t.Errorf("completion %s does not offer %s", sh, c)
			}
		}
	}
	if code, _, _ := runCLI(t, "completion", "powershell"); code != 2 {
		t.Fatalf("completion powershell: %d, want 2", code)
	}
}
