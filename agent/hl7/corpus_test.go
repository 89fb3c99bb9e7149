package hl7

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// corpusRoot is the shared HL7 corpus, relative to this package's directory.
const corpusRoot = "../../../shared/corpus/hl7"

// corpus returns the files of one corpus folder (without LICENSE and
// SOURCE-COMMIT) by base name. Without the corpus the test is skipped on a
// developer's machine and fails in CI.
func corpus(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	path := filepath.Join(corpusRoot, dir)
	entries, err := os.ReadDir(path)
	if err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("corpus %s not available: %v", path, err)
		}
		tb.Fatalf("corpus %s: %v", path, err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "LICENSE" || e.Name() == "SOURCE-COMMIT" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(path, e.Name()))
		if err != nil {
			tb.Fatalf("corpus %s: %v", e.Name(), err)
		}
		files[e.Name()] = b
	}
	if len(files) == 0 {
		tb.Fatalf("corpus %s is empty", path)
	}
	return files
}

func sortedNames(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
