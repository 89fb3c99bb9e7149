package config

import (
	"sort"
	"strings"
)

// Error is a configuration problem: which file, which key, what is wrong.
// A warning (Warning true) is something that will work but probably not as
// meant; `courier config validate --strict` treats warnings as errors.
type Error struct {
	File    string
	Key     string // e.g. sources[1].settle; "" for the whole file
	Problem string
	Line    int  // 1-based line in the file; 0 when unknown
	Warning bool // true for a warning
}

func (e *Error) Error() string {
	where := e.File
	if where == "" {
		where = "config"
	}
	if e.Key == "" {
		return where + ": " + e.Problem
	}
	return where + ": " + e.Key + ": " + e.Problem
}

// Errors is every problem found, in the order found: decoding problems in file
// order, then validation problems in schema order.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// has says whether a problem was already reported for key or a key above or
// below it, so that validation does not blame a value decoding already refused.
func (es Errors) has(key string) bool {
	for _, e := range es {
		if e.Key == key || strings.HasPrefix(key, e.Key+".") || strings.HasPrefix(key, e.Key+"[") ||
			strings.HasPrefix(e.Key, key+".") || strings.HasPrefix(e.Key, key+"[") {
			return true
		}
	}
	return false
}

// nearest returns the candidate closest to word (edit distance), if it is close
// enough to be a likely typo: chunksize → chunk_size, max_attempt → max_attempts.
func nearest(word string, candidates []string) string {
	best, bestD := "", 1<<30
	norm := func(s string) string { return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s)) }
	for _, c := range candidates {
		d := editDistance(norm(word), norm(c))
		if d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(word) > 8 {
		limit = 3
	}
	if bestD <= limit && bestD < len(word) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
