package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads, expands ${ENV}, decodes (unknown keys are errors), applies defaults
// and validates the file at path. Every error is an *Error or Errors naming path;
// problems that do not stop the agent are in the returned Config's Warnings.
func Load(path string) (*Config, error) {
	c, errs, _ := Check(path)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// Parse is Load for bytes already read; name is used in errors.
func Parse(name string, b []byte) (*Config, error) {
	c, errs, _ := CheckBytes(name, b)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// Check reads the file at path and returns every problem found: errs (the agent
// would refuse to start) and warnings (it would start, probably not as meant).
// cfg is nil when errs is not empty.
func Check(path string) (cfg *Config, errs, warnings Errors) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Problem: fmt.Sprintf("cannot read: %v", unwrapPath(err))}}, nil
	}
	return CheckBytes(path, b)
}

// CheckBytes is Check for bytes already read; name is used in messages.
func CheckBytes(name string, b []byte) (cfg *Config, errs, warnings Errors) {
	doc, errs := parseYAML(name, b)
	if len(errs) > 0 {
		return nil, errs, nil
	}
	if doc != nil {
		var missing []string
		expandEnv(doc, &missing)
		if len(missing) > 0 {
			return nil, Errors{{File: name, Problem: "environment variable(s) not set: " + strings.Join(missing, ", ")}}, nil
		}
	}
	return build(name, doc, nil)
}

// build decodes doc (nil: an empty file), applies defaults and validates.
// extra, if set, runs after validation on the result (Overlay's local limits).
func build(name string, doc *yaml.Node, extra func(*Config, *problems)) (*Config, Errors, Errors) {
	c := &Config{File: name, set: map[string]bool{}, doc: doc}
	d := &decoder{file: name, set: c.set}
	if doc != nil {
		d.value(doc, reflect.ValueOf(c).Elem(), "")
	}
	c.ApplyDefaults()
	p := &problems{file: name}
	c.validate(p)
	if extra != nil {
		extra(c, p)
	}
	errs := d.errs
	for _, e := range p.errs {
		if !d.errs.has(e.Key) {
			errs = append(errs, e)
		}
	}
	for _, w := range p.warns {
		if !d.errs.has(w.Key) {
			d.warns = append(d.warns, w)
		}
	}
	if len(errs) > 0 {
		return nil, errs, d.warns
	}
	c.Warnings = d.warns
	return c, nil, d.warns
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseYAML reads b into a node tree (nil for an empty document). YAML's own
// messages often name the line where the enclosing block began, not the line
// that is wrong; the line is found by parsing ever longer prefixes instead.
func parseYAML(name string, b []byte) (*yaml.Node, Errors) {
	var root yaml.Node
	err := yaml.Unmarshal(b, &root)
	if err == nil {
		if len(root.Content) == 0 {
			return nil, nil
		}
		return root.Content[0], nil
	}
	lines := strings.SplitAfter(string(b), "\n")
	var es Errors
	for i, l := range lines {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(indent, "\t") && strings.TrimSpace(l) != "" {
			es = append(es, &Error{File: name, Line: i + 1,
				Problem: fmt.Sprintf("line %d: indented with a tab; YAML indentation must be spaces", i+1)})
		}
	}
	if len(es) > 0 {
		return nil, es
	}
	line, msg := 0, yamlMessage(err)
	for k := 1; k <= len(lines) && len(lines) <= 5000; k++ { // quadratic: config files are short
		var n yaml.Node
		if perr := yaml.Unmarshal([]byte(strings.Join(lines[:k], "")), &n); perr != nil {
			line, msg = k, yamlMessage(perr)
			break
		}
	}
	if line == 0 {
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			fmt.Sscan(m[1], &line)
		}
	}
	problem := explainYAML(msg)
	if line > 0 {
		problem = fmt.Sprintf("line %d: %s", line, problem)
	}
	return nil, Errors{{File: name, Line: line, Problem: problem}}
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

func yamlMessage(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	return yamlLine.ReplaceAllString(s, "")
}

// explainYAML says what a YAML parser message usually means in a config file.
func explainYAML(msg string) string {
	switch {
	case strings.Contains(msg, "tab character"), strings.Contains(msg, "cannot start any token"):
		return "a character YAML does not allow here (a tab? YAML indentation must be spaces)"
	case strings.Contains(msg, "mapping values are not allowed"),
		strings.Contains(msg, "did not find expected key"),
		strings.Contains(msg, "did not find expected '-' indicator"),
		strings.Contains(msg, "block sequence entries are not allowed"):
		return "bad indentation: this line is indented differently from the keys around it (or the line before lacks a ':')"
	case strings.Contains(msg, "could not find expected ':'"):
		return "a key without ':'"
	case strings.Contains(msg, "did not find expected ',' or ']'"):
		return "a [ list ] that is not closed"
	case strings.Contains(msg, "did not find expected ',' or '}'"):
		return "a { map } that is not closed"
	case strings.Contains(msg, "found unexpected end of stream"):
		return "the file ends inside a quoted value or a bracket"
	}
	return "not valid YAML: " + msg
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} in values (not in keys or comments).
func expandEnv(n *yaml.Node, missing *[]string) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			k := m[2 : len(m)-1]
			v, ok := os.LookupEnv(k)
			if !ok {
				*missing = append(*missing, k)
			}
			return v
		})
		if n.Style == 0 {
			n.Tag = "" // re-resolve: ${N} may stand for a number
		}
	}
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 {
			continue // a key
		}
		expandEnv(c, missing)
	}
}

// decoder walks the node tree beside the Config, carrying the key path, and
// decodes each leaf with its own line: every problem names its own key.
type decoder struct {
	file  string
	set   map[string]bool
	errs  Errors
	warns Errors
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Key: key, Line: n.Line,
		Problem: fmt.Sprintf(format, args...) + fmt.Sprintf(" (line %d)", n.Line)})
}

func (d *decoder) warn(n *yaml.Node, key, format string, args ...any) {
	d.warns = append(d.warns, &Error{File: d.file, Key: key, Line: n.Line, Warning: true,
		Problem: fmt.Sprintf(format, args...) + fmt.Sprintf(" (line %d)", n.Line)})
}

var (
	sizeType     = reflect.TypeFor[Size]()
	durationType = reflect.TypeFor[Duration]()
)

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

// value decodes n into v, naming key in problems.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if isNull(n) {
		return // written but empty (`tls:`): the default
	}
	if key != "" {
		d.set[key] = true
	}
	switch v.Type() {
	case sizeType:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "must be a size like 8MiB, got %s", kindName(n))
			return
		}
		s, warn, err := ParseSizeWarn(n.Value)
		if err != nil {
			d.fail(n, key, "%v", err)
			return
		}
		if warn != "" {
			d.warn(n, key, "%s", warn)
		}
		v.SetInt(int64(s))
		return
	case durationType:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "must be a duration like 5s, got %s", kindName(n))
			return
		}
		t, err := ParseDuration(n.Value)
		if err != nil {
			if onlyDigits(n.Value) {
				d.fail(n, key, "bad duration %q: needs a unit, e.g. %ss or %sm", n.Value, n.Value, n.Value)
			} else {
				d.fail(n, key, "%v", err)
			}
			return
		}
		v.SetInt(int64(t))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		before := len(d.errs)
		d.value(n, e.Elem(), key)
		if len(d.errs) == before {
			v.Set(e)
		}
	case reflect.Struct:
		d.mapping(n, v, key)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, key, "must be a list, e.g. [%q], got %s", n.Value, kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.value(e, s.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "must be a single value, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		var i int
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" {
			d.fail(n, key, "must be a whole number, got %q", n.Value)
			return
		}
		if n.Kind != yaml.ScalarNode || n.Decode(&i) != nil {
			d.fail(n, key, "not a number: want a whole number, got %s", kindName(n))
			return
		}
		v.SetInt(int64(i))
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.fail(n, key, "must be true or false, got %s", kindName(n))
			return
		}
		v.SetBool(b)
	default:
		d.fail(n, key, "cannot be decoded (internal: %s)", v.Type())
	}
}

// mapping decodes a YAML map into the struct v: unknown keys are reported with
// the nearest known one, a key written twice is an error.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, key, "must be a map of keys (%s), got %s", strings.Join(fieldNames(v.Type()), ", "), kindName(n))
		return
	}
	fields := fieldIndex(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.ShortTag() == "!!merge" { // YAML merge key: <<: *defaults
			for val.Kind == yaml.AliasNode {
				val = val.Alias
			}
			if val.Kind == yaml.SequenceNode {
				for _, m := range val.Content {
					d.value(m, v, key)
				}
			} else {
				d.value(val, v, key)
			}
			continue
		}
		full := k.Value
		if key != "" {
			full = key + "." + k.Value
		}
		if first, dup := seen[k.Value]; dup {
			d.errs = append(d.errs, &Error{File: d.file, Key: full, Line: k.Line,
				Problem: fmt.Sprintf("written twice (lines %d and %d); keep one", first, k.Line)})
			continue
		}
		seen[k.Value] = k.Line
		fi, ok := fields[k.Value]
		if !ok {
			problem := fmt.Sprintf("unknown key (line %d)", k.Line)
			if s := nearest(k.Value, fieldNames(v.Type())); s != "" {
				problem += "; did you mean " + s + "?"
			} else if elsewhere := schemaPaths(k.Value); len(elsewhere) > 0 {
				problem += "; " + strings.Join(elsewhere, " and ") + " has that name: check the indentation"
			}
			d.errs = append(d.errs, &Error{File: d.file, Key: full, Line: k.Line, Problem: problem})
			continue
		}
		d.value(val, v.Field(fi), full)
	}
}

func onlyDigits(s string) bool {
	s = strings.TrimSpace(s)
	return s != "" && strings.Trim(s, "0123456789") == "" && s != "0"
}

// fieldIndex maps the yaml keys of struct type t to field indexes.
func fieldIndex(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	return m
}

func fieldNames(t reflect.Type) []string {
	return sortedKeys(fieldIndex(t))
}

// schemaPaths lists the keys of the whole schema whose last part is name
// (upload.endpoint for "endpoint"), for a key written at the wrong depth.
func schemaPaths(name string) []string {
	var out []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			if t.Kind() == reflect.Slice {
				path += "[]"
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == sizeType || t == durationType {
			return
		}
		for _, k := range fieldNames(t) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if k == name && path != "" {
				out = append(out, p)
			}
			walk(t.Field(fieldIndex(t)[k]).Type, p)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	if len(out) > 3 {
		out = out[:3]
	}
	return out
}
