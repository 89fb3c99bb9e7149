package folder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/edgecourier/courier/spool"
)

// Spool is what a folder source needs of the spool (*spool.Spool implements it).
type Spool interface {
	ReceiveFile(ctx context.Context, in spool.Intake, path string) (*spool.Item, error)
	Reject(ctx context.Context, in spool.Intake, size int64, reason string) (*spool.Item, error)
	HasFingerprint(ctx context.Context, source, fingerprint string) (bool, error)
}

// counters is what tests observe of a running source (scans, settling, takes).
// Nothing outside the package reads it: it is not API.
type counters struct {
	Seen     int64     // files noticed as new work since start
	Taken    int64     // files received into the spool (duplicates included)
	Rejected int64     // files rejected (too large, unreadable, symlink outside, not a file)
	Settling int       // files waiting for size and mtime to settle, or for room in the spool
	Watching bool      // fsnotify is active; false: rescans only
	Folders  int       // folders watched
	LastScan time.Time // end of the last full scan
}

// Source watches one folder and hands settled files to the spool.
type Source struct {
	opts   Options
	sp     Spool
	log    *slog.Logger
	now    func() time.Time
	root   string // absolute
	move   string // absolute move target; "" unless after: move:DIR
	keep   bool
	rejDir string
	// open checks that a settled file can be read; a field so tests can make it fail
	// the way a permission problem does (the tests run as root).
	open func(name string) (*os.File, error)

	running atomic.Bool

	mu    sync.Mutex
	stats counters

	// smu guards what follows while checkDue's takes run concurrently (take.go); at
	// all other times only Run's goroutine touches it.
	smu sync.Mutex
	// Owned by Run's goroutine.
	watcher     *fsnotify.Watcher
	watched     map[string]bool       // absolute folder paths with a watch
	pending     map[string]*candidate // by slash-separated path relative to root
	queue       dueQueue              // when pending candidates are due
	known       map[string]string     // rel -> fingerprint of a state already dealt with
	kept        map[string]keptFile   // rel -> the state taken (after: keep)
	partialScan bool                  // the last full scan skipped something it could not read
	stuck       map[string]stuck      // rel -> dealt with, but not yet released / moved aside
	warned      map[string]bool       // unreadable entries already logged at warn
	rootReal    string                // root with symlinks resolved, "" while unavailable
	rootErr     bool                  // the root was unavailable at the last scan
	fullLogged  time.Time
	addLogged   bool
}

// New checks the options and prepares a source; Run starts it. The folder need not
// exist yet (a share mounted later): Run logs and keeps looking.
func New(opts Options, sp Spool) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if sp == nil {
		return nil, errors.New("folder: no spool")
	}
	opts = opts.withDefaults()
	root, err := filepath.Abs(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if fi, err := os.Stat(root); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("path: %s is not a folder", root)
	}
	s := &Source{
		opts:    opts,
		sp:      sp,
		log:     opts.Logger,
		now:     opts.Now,
		root:    root,
		keep:    opts.After == "keep",
		rejDir:  filepath.Join(root, RejectedDir),
		open:    openExclusive,
		watched: map[string]bool{},
		pending: map[string]*candidate{},
		known:   map[string]string{},
		kept:    map[string]keptFile{},
		stuck:   map[string]stuck{},
		warned:  map[string]bool{},
	}
	if dir, ok := strings.CutPrefix(opts.After, "move:"); ok {
		if s.move, err = filepath.Abs(dir); err != nil {
			return nil, fmt.Errorf("after: %w", err)
		}
	}
	return s, nil
}

// counters returns a snapshot; safe while Run runs.
func (s *Source) counters() counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Source) count(f func(st *counters)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// Run watches and scans until ctx is done, then returns nil. It starts no goroutine
// of its own; the watcher's is closed before Run returns.
func (s *Source) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("folder: source is already running")
	}
	defer s.running.Store(false)

	var events <-chan fsnotify.Event
	var errs <-chan error
	if !s.opts.NoWatch {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			s.log.Warn("folder: cannot watch for changes, relying on periodic rescans",
				"rescan", s.opts.Rescan, "err", err)
		} else {
			s.watcher = w
			events, errs = w.Events, w.Errors
			defer func() {
				w.Close()
				s.watcher = nil
				s.watched = map[string]bool{}
			}()
		}
	}
	s.log.Info("folder: source started", "after", afterKind(s.opts.After), "settle", s.opts.Settle,
		"rescan", s.opts.Rescan, "max_size", s.opts.MaxSize, "watching", s.watcher != nil)

	rescan := time.NewTicker(s.opts.Rescan)
	defer rescan.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	scanNow := true
	var scanAt, lastScan, errLogged time.Time // scanAt: a rescan asked for by a watcher error
	dirty := map[string]bool{}
	for {
		if !scanAt.IsZero() && !s.now().Before(scanAt) {
			scanNow, scanAt = true, time.Time{}
		}
		if scanNow {
			scanNow = false
			lastScan = s.now()
			s.fullScan(ctx)
		}
		s.touchAll(ctx, dirty)
		clear(dirty)
		s.checkDue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.updateStats()
		next := s.nextWake()
		if !scanAt.IsZero() {
			next = min(next, max(scanAt.Sub(s.now()), 0))
		}
		wake.Reset(next)

		select {
		case <-ctx.Done():
			return nil
		case <-rescan.C:
			scanNow = true
		case <-wake.C:
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			dirty[ev.Name] = true
			// Coalesce a burst (a file written in many chunks is many events).
		drain:
			for range 4096 {
				select {
				case ev, ok := <-events:
					if !ok {
						events = nil
						break drain
					}
					dirty[ev.Name] = true
				default:
					break drain
				}
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			lvl := slog.LevelDebug
			if now := s.now(); now.Sub(errLogged) >= time.Minute {
				lvl, errLogged = slog.LevelWarn, now
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				s.log.Log(ctx, lvl, "folder: watcher queue overflowed, rescanning")
			} else {
				s.log.Log(ctx, lvl, "folder: watcher error, rescanning", "err", err)
			}
			// Rescan now, but not more than once a second however fast errors come.
			if scanAt.IsZero() {
				scanAt = lastScan.Add(time.Second)
				if now := s.now(); scanAt.Before(now) {
					scanAt = now
				}
			}
		}
	}
}

func (s *Source) updateStats() {
	s.count(func(st *counters) {
		st.Settling = len(s.pending)
		st.Watching = s.watcher != nil
		st.Folders = len(s.watched)
	})
}

// rel is p relative to the root, slash-separated; ok is false outside the root.
func (s *Source) rel(p string) (string, bool) {
	r, err := filepath.Rel(s.root, p)
	if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return "", false
	}
	return filepath.ToSlash(r), true
}

func (s *Source) abs(rel string) string { return filepath.Join(s.root, filepath.FromSlash(rel)) }

// fingerprint identifies one state of a file for after: keep: path, size, mtime and
// the file's identity (device and inode, ctime; on Windows volume serial, file index
// and change time), so a rewrite that keeps size and mtime (copy tools that preserve
// timestamps, shares with 2-second mtimes) is still a new state.
func fingerprint(p, rel string, fi fs.FileInfo) string {
	id := identity(p, fi)
	if id == "" {
		return weakFingerprint(rel, fi)
	}
	h := sha256.New()
	h.Write([]byte(weakFingerprint(rel, fi)))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return hex.EncodeToString(h.Sum(nil))
}

// weakFingerprint is path, size and mtime only: what versions before the identity
// was added recorded, and what tells "only the identity changed" (then the content
// decides, see Source.sameContent).
func weakFingerprint(rel string, fi fs.FileInfo) string {
	h := sha256.New()
	h.Write([]byte(rel))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(fi.Size(), 10)))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(fi.ModTime().UnixNano(), 10)))
	return hex.EncodeToString(h.Sum(nil))
}

// ref is what logs say instead of a file name, which may carry a patient's name.
func ref(rel string) string {
	h := sha256.Sum256([]byte(rel))
	return hex.EncodeToString(h[:6])
}

func (s *Source) relOr(p string) string {
	if r, ok := s.rel(p); ok {
		return r
	}
	return p
}

func afterKind(after string) string {
	if strings.HasPrefix(after, "move:") {
		return "move"
	}
	return after
}

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeIrregular != 0:
		return "irregular file"
	default:
		return "special file"
	}
}

// errKind is an error without the path it names (paths may carry patient names).
func errKind(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Op + ": " + le.Err.Error()
	}
	return err.Error()
}
