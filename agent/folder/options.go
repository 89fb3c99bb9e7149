package folder

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgecourier/courier/spool"
)

// Defaults for zero Options fields.
const (
	DefaultSettle = 2 * time.Second
	DefaultRescan = 30 * time.Second
)

// DefaultInclude and DefaultExclude are used when Options.Include / Options.Exclude are nil.
var (
	DefaultInclude = []string{"*"}
	DefaultExclude = []string{".*", "*.tmp", "*.part", "~*"}
)

// RejectedDir is the folder under the watched root where rejected files are moved.
const RejectedDir = ".courier-rejected"

// Options configure a folder source. Field names in Validate's messages are the
// config keys of CONTRACT.md (sources[i].settle, ...).
type Options struct {
	Name string // source name, recorded with every item
	Path string // the watched folder

	// Include and Exclude are path.Match globs on the base name. A file is taken when
	// it matches an include and no exclude. Exclude also applies to folder names: an
	// excluded folder is not descended into. nil means the defaults; an empty non-nil
	// Exclude excludes nothing.
	Include, Exclude []string

	// Settle is how long size and mtime must stay unchanged before a file is taken.
	Settle time.Duration
	// After is what happens to a file once it is durable in the spool:
	// "delete" (default), "move:DIR" (keeping its path relative to the root) or "keep".
	After string
	// MaxSize: larger files are rejected. 0 = no limit.
	MaxSize  int64
	Priority spool.Priority
	// Rescan is the period of the full rescan that finds what the watcher missed.
	Rescan time.Duration
	// NoInspect keeps the spool from reading files as HL7 (config hl7: off).
	NoInspect bool
	// NoWatch turns fsnotify off and relies on rescans alone, as happens on its own
	// when no watcher can be created (some network shares).
	NoWatch bool

	Logger *slog.Logger
	Now    func() time.Time // nil = time.Now
}

// Validate reports the first problem, naming the config key.
func (o Options) Validate() error {
	if o.Name == "" {
		return errors.New("name: must be set")
	}
	if o.Path == "" {
		return errors.New("path: must be set for kind folder")
	}
	for i, p := range o.Include {
		if _, err := path.Match(p, "x"); err != nil {
			return fmt.Errorf("include[%d]: bad pattern %q: %w", i, p, err)
		}
	}
	for i, p := range o.Exclude {
		if _, err := path.Match(p, "x"); err != nil {
			return fmt.Errorf("exclude[%d]: bad pattern %q: %w", i, p, err)
		}
	}
	if o.Settle < 0 {
		return fmt.Errorf("settle: must be > 0, got %q", o.Settle.String())
	}
	if o.Rescan < 0 {
		return fmt.Errorf("rescan: must be > 0, got %q", o.Rescan.String())
	}
	if o.MaxSize < 0 {
		return fmt.Errorf("max_size: must be >= 0, got %d", o.MaxSize)
	}
	if o.Priority < spool.PriorityHigh || o.Priority > spool.PriorityLow {
		return fmt.Errorf("priority: must be high, normal or low, got %d", int(o.Priority))
	}
	switch {
	case o.After == "", o.After == "delete", o.After == "keep":
	case strings.HasPrefix(o.After, "move:"):
		dir := strings.TrimPrefix(o.After, "move:")
		if dir == "" {
			return fmt.Errorf(`after: move needs a folder, got %q`, o.After)
		}
		root, err1 := filepath.Abs(o.Path)
		target, err2 := filepath.Abs(dir)
		if err1 == nil && err2 == nil && root == target {
			return fmt.Errorf("after: move target must not be the watched folder itself, got %q", o.After)
		}
	default:
		return fmt.Errorf(`after: must be delete, keep or move:DIR, got %q`, o.After)
	}
	return nil
}

// withDefaults returns a copy with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.Include == nil {
		o.Include = DefaultInclude
	}
	if o.Exclude == nil {
		o.Exclude = DefaultExclude
	}
	if o.Settle == 0 {
		o.Settle = DefaultSettle
	}
	if o.Rescan == 0 {
		o.Rescan = DefaultRescan
	}
	if o.After == "" {
		o.After = "delete"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// wanted says whether a file's base name is included and not excluded.
func (o *Options) wanted(name string) bool {
	if o.excluded(name) {
		return false
	}
	for _, p := range o.Include {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

func (o *Options) excluded(name string) bool {
	for _, p := range o.Exclude {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
