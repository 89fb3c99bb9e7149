package config

import "testing"

// FuzzCheckBytes: no input makes the loader panic, and a document is either
// accepted (a Config, no errors) or refused with at least one named problem.
func FuzzCheckBytes(f *testing.F) {
	for _, s := range []string{
		"agent: {id: a}\nupload: {endpoint: \"https://i.example.org/f/\", retry: {initial: soon, max: 30s}}\n",
		"sources: [{name: a, kind: folder, path: /x, settle: 5min}]\n",
		"base: &b {kind: folder}\nsources: [{<<: *b, name: a, path: /x}]\n",
		"upload:\n\tendpoint: x\n",
		"a: &a [*a]\n",
		"sources:\n  - name: a\n   kind: mllp\n",
		"spool: {max_bytes: 1,5GiB, keep_done: 7d}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, errs, _ := CheckBytes("f.yaml", b)
		if (c == nil) == (len(errs) == 0) {
			t.Fatalf("config %v with %d errors", c != nil, len(errs))
		}
		if c != nil {
			_ = c.Digest()
		}
	})
}
