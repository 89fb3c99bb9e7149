package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgecourier/courier/agent/hl7"
	"github.com/edgecourier/courier/spool"
)

// corpusSecrets are the PID-2/3/4 id components and PID-5 family and given
// names of every PID segment of every message of the corpus.
func corpusSecrets(t *testing.T, files map[string][]byte) []string {
	set := map[string]bool{}
	for _, name := range sortedKeys(files) {
		f, err := hl7.ParseFile(files[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d := f.Messages[0].Delims
		for _, line := range strings.FieldsFunc(string(files[name]), func(r rune) bool { return r == '\r' || r == '\n' }) {
			if !strings.HasPrefix(line, "PID"+string(d.Field)) {
				continue
			}
			fl := strings.Split(line, string(d.Field))
			for i, comps := range map[int][]int{2: {0}, 3: {0}, 4: {0}, 5: {0, 1}} {
				if i >= len(fl) {
					continue
				}
				for rep := range strings.SplitSeq(fl[i], string(d.Repetition)) {
					parts := strings.Split(rep, string(d.Component))
					for _, c := range comps {
						if c < len(parts) {
							v, _, _ := strings.Cut(parts[c], string(d.Subcomponent))
							if v != "" && v != `""` {
								set[v] = true
							}
						}
					}
				}
			}
		}
	}
	var out []string
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// TestCorpusEventsCarryNoPatient builds the verified event (agent/events, with
// its FHIR part) for every corpus file, as the agent does, and looks in all of
// them for every PID-2/3/4 id and PID-5 name of the whole corpus.
func TestCorpusEventsCarryNoPatient(t *testing.T) {
	files := hl7Corpus(t)
	secrets := corpusSecrets(t, files)
	salt := []byte("corpus-salt")
	var all []string
	var nMessages, nBatches, nAttachments, nRedactions, nRedactedFiles int
	at := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	inspect := hl7.Inspector(salt, 0)
	for i, name := range sortedKeys(files) {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, files[name], 0o600); err != nil {
			t.Fatal(err)
		}
		env := inspect(p)
		if env == nil {
			t.Fatalf("%s: no envelope", name)
		}
		f, _ := hl7.ParseFile(files[name])
		nMessages += f.Count
		if f.Batch {
			nBatches++
		}
		nAttachments += len(env.Attachments)
		nRedactions += len(env.Data.Redacted)
		if len(env.Data.Redacted) > 0 {
			nRedactedFiles++
		}
		data, err := json.Marshal(env.Data)
		if err != nil {
			t.Fatal(err)
		}
		// A UUIDv7-shaped id without long digit runs (which short ids would match).
		sum := sha256.Sum256([]byte(name))
		h := hex.EncodeToString(sum[:])
		id := "019" + h[:5] + "-" + h[5:9] + "-7" + h[9:12] + "-8" + h[12:15] + "-" + h[15:27]
		it := &spool.Item{
			ID: id, Source: "lab-inbox", SourceKind: "folder",
			Filename: name, Size: int64(len(files[name])), SHA256: strings.Repeat("ab", 32), SHA1: strings.Repeat("cd", 20),
			ContentType: env.ContentType, Location: "https://ingest.example.org/files/" + id,
			ReceivedAt: at, VerifiedAt: at, UpdatedAt: at, Envelope: data,
		}
		// data.fhir as agent/hl7.go's adapter builds it.
		opts := Options{AgentID: "clinic-042", FHIR: func(it *spool.Item) (any, bool) {
			var d hl7.EnvelopeData
			if err := json.Unmarshal(it.Envelope, &d); err != nil {
				return nil, false
			}
			return hl7.DocumentReference(hl7.DocRefInput{
				FileID: it.ID, Location: it.Location, ContentType: it.ContentType, Size: it.Size,
				SHA1Hex: it.SHA1, Date: it.VerifiedAt, HL7: d,
			}), true
		}}
		for _, typ := range []string{spool.EventVerified, spool.EventDuplicate, spool.EventQuarantined} {
			b, err := Marshal(it, typ, opts)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, string(b))
		}
	}
	// Every corpus value is looked for as a whole JSON value in every event;
	// a file's own values of 4 characters (hl7's minContained) or more also inside any
	// text of its events. (Another file's "000000" inside a timestamp is
	// chance, not a leak: redaction works on the message's own identifiers.)
	leaks := 0
	names := sortedKeys(files)
	for i, ev := range all {
		own := corpusSecrets(t, map[string][]byte{names[i/3]: files[names[i/3]]})
		for _, secret := range secrets {
			hit := strings.Contains(ev, `"`+secret+`"`)
			if !hit && len(secret) >= 4 && slices.Contains(own, secret) {
				hit = strings.Contains(ev, secret)
			}
			if hit {
				leaks++
				if leaks <= 20 {
					t.Errorf("%q (PID-2/3/4/5 of the corpus) in the %s event for %s", secret, []string{"verified", "duplicate", "quarantined"}[i%3], names[i/3])
				}
			}
		}
	}
	if len(secrets) < 50 {
		t.Errorf("only %d patient values in the corpus: the check checks little", len(secrets))
	}
	t.Logf("corpus: %d files, %d messages, %d batches, %d attachments, %d redactions in %d files; %d patient values looked for in %d events",
		len(files), nMessages, nBatches, nAttachments, nRedactions, nRedactedFiles, len(secrets), len(all))
}

// hl7Corpus reads the shared corpus's fhir-converter messages (relative to
// this package's folder). Without it the test is skipped on a developer's
// machine and fails in CI.
func hl7Corpus(t *testing.T) map[string][]byte {
	t.Helper()
	dir := "../../../shared/corpus/hl7/fhir-converter"
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("corpus %s not available: %v", dir, err)
		}
		t.Fatalf("corpus %s: %v", dir, err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "LICENSE" || e.Name() == "SOURCE-COMMIT" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func sortedKeys(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
