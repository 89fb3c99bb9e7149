package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Size is a byte count written as 8MiB, 10GiB, 500KB or a plain number.
type Size int64

const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

// sizeSyntax is what a size may look like: digits, an optional fraction with a
// '.', an optional unit. humanize alone would read "1,5GiB" as 15GiB and "1.5"
// as 1 byte; both are refused here before it sees them.
var sizeSyntax = regexp.MustCompile(`^([0-9]+)(\.[0-9]+)?\s*([A-Za-z]*)$`)

// ParseSize parses "8MiB", "1.5GiB", "200KB", "1024". Units follow go-humanize
// (KiB/MiB/GiB/TiB binary, KB/MB/GB/TB decimal), computed exactly. A bare
// single-letter unit (10G) keeps the meaning it had in earlier releases, binary,
// so that an upgrade does not shrink a limit; ParseSizeWarn says so.
func ParseSize(s string) (Size, error) {
	v, _, err := ParseSizeWarn(s)
	return v, err
}

// ParseSizeWarn is ParseSize that also returns a warning ("" if none) for a
// value whose unit is ambiguous.
func ParseSizeWarn(s string) (Size, string, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, "", errors.New("empty size (want e.g. 8MiB, 10GiB, 1048576)")
	}
	if strings.Contains(t, ",") {
		return 0, "", fmt.Errorf("bad size %q: write decimals with '.', not ',' (e.g. 1.5GiB)", s)
	}
	m := sizeSyntax.FindStringSubmatch(t)
	if m == nil {
		return 0, "", fmt.Errorf("bad size %q (want e.g. 8MiB, 10GiB, 1048576)", s)
	}
	unit, warn := m[3], ""
	if unit == "" && m[2] != "" {
		return 0, "", fmt.Errorf("bad size %q: a byte count without a unit must be a whole number (e.g. 1536MiB, 1.5GiB)", s)
	}
	if len(unit) == 1 && strings.ContainsAny(unit, "KMGTPEkmgtpe") {
		up := strings.ToUpper(unit)
		warn = fmt.Sprintf("%q is read as %s%siB (binary, as before); write %s%siB or %s%sB (decimal) to say which",
			s, m[1]+m[2], up, m[1]+m[2], up, m[1]+m[2], up)
		unit = up + "i"
	}
	mult, err := humanize.ParseBigBytes("1" + unit)
	if err != nil {
		return 0, "", fmt.Errorf("bad size %q: unknown unit %q (want B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s, m[3])
	}
	num, ok := new(big.Rat).SetString(m[1] + m[2])
	if !ok {
		return 0, "", fmt.Errorf("bad size %q", s)
	}
	num.Mul(num, new(big.Rat).SetInt(mult))
	if !num.IsInt() {
		return 0, "", fmt.Errorf("bad size %q: not a whole number of bytes", s)
	}
	n := num.Num()
	if !n.IsInt64() {
		return 0, "", fmt.Errorf("size %q is too large", s)
	}
	return Size(n.Int64()), warn, nil
}

// String is exact: the largest binary unit that divides the size, else bytes.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*s = v
	return nil
}

func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalJSON accepts a number of bytes or a string like "8MiB".
func (s *Size) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		v, err := ParseSize(n.String())
		if err != nil {
			return err
		}
		*s = v
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("bad size %s (want e.g. \"8MiB\" or 1048576)", b)
	}
	v, err := ParseSize(str)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Duration is a time.Duration written as 500ms, 2s, 5m, 168h, 7d or 1w.
type Duration time.Duration

func (d Duration) D() time.Duration { return time.Duration(d) }

// String is Go's form: 2s, 5m0s, 168h0m0s.
func (d Duration) String() string { return time.Duration(d).String() }

// LogValue makes slog print 5m0s, not a count of nanoseconds.
func (d Duration) LogValue() slog.Value { return slog.StringValue(d.String()) }

// ParseDuration reads Go's syntax (1h30m, 1.5s, -2s) and, for long periods,
// days, weeks and years (7d, 1w, 2y) as Prometheus writes them.
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if v, err := time.ParseDuration(t); err == nil {
		return Duration(v), nil
	}
	if v, err := model.ParseDurationAllowNegative(t); err == nil {
		return Duration(v), nil
	}
	return 0, fmt.Errorf("bad duration %q (want e.g. 500ms, 2s, 5m, 168h, 7d, 1w)", s)
}

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*d = v
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalJSON accepts a string like "5m" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("bad duration %s (want e.g. \"2s\", \"5m\", \"7d\")", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := ParseDuration(str)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(d.String())), nil }
