package folder

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
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

// Stats is a snapshot of a source's counters for status reports.
type Stats struct {
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
	stats Stats

	// Owned by Run's goroutine.
	watcher     *fsnotify.Watcher
	watched     map[string]bool       // absolute folder paths with a watch
	pending     map[string]*candidate // by slash-separated path relative to root
	queue       dueQueue              // when pending candidates are due
	known       map[string]string     // rel -> fingerprint of a state already dealt with
	partialScan bool                  // the last full scan skipped something it could not read
	stuck       map[string]stuck      // rel -> dealt with, but not yet released / moved aside
	warned      map[string]bool       // unreadable entries already logged at warn
	rootReal    string                // root with symlinks resolved, "" while unavailable
	rootErr     bool                  // the root was unavailable at the last scan
	fullLogged  time.Time
	addLogged   bool
}

// candidate is a file waiting to settle.
type candidate struct {
	size    int64
	mtime   time.Time
	stable  time.Time // when size/mtime were last seen to change (or first seen)
	retryAt time.Time // not before this (spool full, file locked); zero = stable+settle
}

func (c *candidate) due(settle time.Duration) time.Time {
	d := c.stable.Add(settle)
	if c.retryAt.After(d) {
		return c.retryAt
	}
	return d
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

// Stats returns a snapshot of the counters; safe while Run runs.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Source) count(f func(st *Stats)) {
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

// nextWake is how long until the earliest candidate is due.
func (s *Source) nextWake() time.Duration {
	for len(s.queue) > 0 {
		e := s.queue[0]
		if c := s.pending[e.rel]; c != nil && c.due(s.opts.Settle).Equal(e.at) {
			// A little slack so a check right at the deadline sees it passed.
			return max(e.at.Sub(s.now()), 0) + 10*time.Millisecond
		}
		heap.Pop(&s.queue) // stale: the candidate changed, went, or was rescheduled
	}
	return time.Hour
}

// track starts the settling of a new candidate.
func (s *Source) track(rel string, fi fs.FileInfo) {
	c := &candidate{size: fi.Size(), mtime: fi.ModTime(), stable: s.now()}
	s.pending[rel] = c
	s.schedule(rel, c)
}

// changed restarts the settling of a candidate whose size or mtime changed.
func (s *Source) changed(rel string, c *candidate, fi fs.FileInfo) {
	c.size, c.mtime, c.stable, c.retryAt = fi.Size(), fi.ModTime(), s.now(), time.Time{}
	s.schedule(rel, c)
}

// retryIn looks at a candidate again after d at the earliest (spool full, file locked).
func (s *Source) retryIn(rel string, c *candidate, d time.Duration) {
	c.retryAt = s.now().Add(d)
	s.schedule(rel, c)
}

func (s *Source) schedule(rel string, c *candidate) {
	heap.Push(&s.queue, dueEntry{at: c.due(s.opts.Settle), rel: rel})
}

// dueQueue orders candidates by when they are due. Entries are not updated in place:
// a changed candidate gets a new entry and the old one is dropped as stale when it
// comes up, so a file rewritten many times costs no search.
type dueQueue []dueEntry

type dueEntry struct {
	at  time.Time
	rel string
}

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueQueue) Push(x any)        { *q = append(*q, x.(dueEntry)) }
func (q *dueQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

func (s *Source) updateStats() {
	s.count(func(st *Stats) {
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

// skipDir says whether a folder below the root is not to be looked into.
func (s *Source) skipDir(p string) bool {
	if p == s.rejDir || (s.move != "" && p == s.move) {
		return true
	}
	if s.opts.excluded(filepath.Base(p)) {
		return true
	}
	// The move target may be written another way than the path we walk (through a
	// symlinked root, or in other letter case on Windows): compare the folders
	// themselves, or the agent would take back what it moved there.
	if s.move != "" {
		if a, err := os.Stat(p); err == nil {
			if b, err := os.Stat(s.move); err == nil && os.SameFile(a, b) {
				return true
			}
		}
	}
	return false
}

// inSkipped says whether p lies inside a folder that is not looked into.
func (s *Source) inSkipped(p string) bool {
	for d := filepath.Dir(p); d != s.root && len(d) > len(s.root); d = filepath.Dir(d) {
		if s.skipDir(d) {
			return true
		}
	}
	return false
}

// fullScan walks the whole tree: files present at start-up, missed events, new folders.
func (s *Source) fullScan(ctx context.Context) {
	real, err := filepath.EvalSymlinks(s.root)
	if err != nil {
		if !s.rootErr {
			s.log.Warn("folder: watched folder is not available, will look again", "rescan", s.opts.Rescan, "err", err)
			s.rootErr = true
		}
		return
	}
	s.rootReal = real
	if s.rootErr {
		s.log.Info("folder: watched folder is available again")
		s.rootErr = false
	}
	if s.watcher != nil {
		// What the watcher really holds: it drops watches of folders that moved or
		// vanished on its own, and a watch under a stale name hears nothing useful.
		actual := map[string]bool{}
		for _, p := range s.watcher.WatchList() {
			if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
				s.watcher.Remove(p)
				continue
			}
			actual[p] = true
		}
		s.watched = actual
	}
	files := map[string]bool{}
	dirs := map[string]bool{}
	s.partialScan = false
	if !s.walk(ctx, s.root, files, dirs) {
		return
	}
	// What the walk did not meet is gone: forget it.
	for rel := range s.pending {
		if !files[rel] {
			delete(s.pending, rel)
		}
	}
	for rel := range s.known {
		if !files[rel] {
			delete(s.known, rel)
		}
	}
	for d := range s.watched {
		if !dirs[d] {
			s.unwatch(d)
		}
	}
	s.retryStuck()
	s.pruneFingerprints(ctx)
	s.count(func(st *Stats) { st.LastScan = s.now() })
}

// fingerprintPruner is the spool's optional clean-up of fingerprints of files gone.
type fingerprintPruner interface {
	PruneFingerprints(ctx context.Context, source string, present map[string]bool) (int, error)
}

// pruneFingerprints, after a complete scan in keep mode, lets the spool forget the
// fingerprints of files no longer in the folder; those still there stay known.
func (s *Source) pruneFingerprints(ctx context.Context) {
	p, ok := s.sp.(fingerprintPruner)
	if !s.keep || !ok {
		return
	}
	// Only a scan that saw the whole tree may say a file is gone: a sub-folder that
	// could not be read, or a share whose mount point is empty while it is down,
	// would otherwise make every kept file look new again.
	if s.partialScan || len(s.known) == 0 {
		return
	}
	present := make(map[string]bool, len(s.known))
	for _, fp := range s.known {
		present[fp] = true
	}
	if n, err := p.PruneFingerprints(ctx, s.opts.Name, present); err != nil {
		s.log.Warn("folder: pruning fingerprints failed", "err", err)
	} else if n > 0 {
		s.log.Debug("folder: forgot fingerprints of files no longer present", "count", n)
	}
}

// walk scans the tree under dir, adding watches before reading each folder so that
// nothing created meanwhile is missed. It reports false if ctx ended or dir was unreadable.
func (s *Source) walk(ctx context.Context, dir string, files, dirs map[string]bool) bool {
	complete := true
	start := dir
	if dir == s.root && !strings.HasSuffix(dir, string(filepath.Separator)) {
		// The root may be a symlink (/srv/lab -> /mnt/share/lab): a trailing separator
		// makes the walk enter it. Links below the root are never followed.
		start = dir + string(filepath.Separator)
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p = filepath.Clean(p)
		if err != nil {
			if p == dir {
				return err
			}
			lvl := slog.LevelWarn
			if s.warned[p] {
				lvl = slog.LevelDebug // once at warn, not at every rescan
			} else if len(s.warned) < 10000 {
				s.warned[p] = true
			}
			s.log.Log(ctx, lvl, "folder: cannot read an entry, will try again", "file", ref(s.relOr(p)), "err", errKind(err))
			s.partialScan = true
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if p != s.root && s.skipDir(p) {
				return fs.SkipDir
			}
			if dirs != nil {
				dirs[p] = true
			}
			s.addWatch(p)
			return nil
		}
		rel, ok := s.rel(p)
		if !ok {
			return nil
		}
		if files != nil {
			files[rel] = true
		}
		s.consider(ctx, p, rel, nil)
		return nil
	})
	if err != nil {
		if ctx.Err() == nil && dir != s.root {
			s.log.Debug("folder: cannot scan folder", "path", s.relOr(dir), "err", err)
		} else if ctx.Err() == nil {
			s.log.Warn("folder: cannot scan watched folder", "err", err)
		}
		complete = false
	}
	return complete
}

func (s *Source) addWatch(dir string) {
	if s.watcher == nil || s.watched[dir] {
		return
	}
	if err := s.watcher.Add(dir); err != nil {
		// E.g. the inotify watch limit: rescans still find everything, only later.
		if !s.addLogged {
			s.log.Warn("folder: cannot watch a folder, relying on rescans for it", "file", ref(s.relOr(dir)), "err", err)
			s.addLogged = true
		}
		return
	}
	s.watched[dir] = true
}

// unwatch drops the watch of dir and of every folder below it.
func (s *Source) unwatch(dir string) {
	prefix := dir + string(filepath.Separator)
	for d := range s.watched {
		if d == dir || strings.HasPrefix(d, prefix) {
			if s.watcher != nil {
				s.watcher.Remove(d) // already gone with the folder, usually
			}
			delete(s.watched, d)
		}
	}
}

// touchAll handles the paths named by a burst of events. Paths that are gone go
// first: a folder renamed within the tree must lose its old watch before it is
// watched under its new name (inotify hands out the same watch for the same folder).
func (s *Source) touchAll(ctx context.Context, dirty map[string]bool) {
	var present []string
	for p := range dirty {
		if _, err := os.Lstat(p); err == nil {
			present = append(present, p)
			continue
		}
		s.touch(ctx, p)
	}
	sort.Strings(present) // parents before children
	for _, p := range present {
		if ctx.Err() != nil {
			return
		}
		s.touch(ctx, p)
	}
}

// touch handles one path named by an event: a hint to look again.
func (s *Source) touch(ctx context.Context, p string) {
	rel, ok := s.rel(p)
	if !ok || rel == "." || s.inSkipped(p) {
		return
	}
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.forgetTree(p, rel)
		}
		return
	}
	if fi.IsDir() {
		if s.skipDir(p) {
			return
		}
		// A new (or renamed) folder may already hold files.
		s.walk(ctx, p, nil, nil)
		return
	}
	s.consider(ctx, p, rel, fi)
}

// forgetTree forgets a path that went away, and everything below it if it was a folder.
func (s *Source) forgetTree(p, rel string) {
	delete(s.pending, rel)
	delete(s.known, rel)
	delete(s.stuck, rel)
	if !s.watched[p] {
		return
	}
	s.unwatch(p)
	prefix := rel + "/"
	for r := range s.pending {
		if strings.HasPrefix(r, prefix) {
			delete(s.pending, r)
		}
	}
	for r := range s.known {
		if strings.HasPrefix(r, prefix) {
			delete(s.known, r)
			delete(s.stuck, r)
		}
	}
}

// consider looks at one non-folder entry: starts or updates its settling, or deals
// with it at once (symlinks, special files). fi may be nil.
func (s *Source) consider(ctx context.Context, p, rel string, fi fs.FileInfo) {
	name := filepath.Base(p)
	if !s.opts.wanted(name) {
		return
	}
	if fi == nil {
		var err error
		if fi, err = os.Lstat(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				delete(s.pending, rel)
			}
			return
		}
	}
	if fi.IsDir() {
		return
	}
	fp := fingerprint(rel, fi)
	if s.known[rel] == fp {
		return
	}
	delete(s.known, rel)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		s.considerLink(ctx, p, rel, fi)
		return
	case !fi.Mode().IsRegular():
		delete(s.pending, rel)
		s.count(func(st *Stats) { st.Seen++ })
		s.reject(ctx, p, rel, fi, 0, "not a regular file ("+kindOf(fi.Mode())+")")
		return
	}
	c := s.pending[rel]
	if c == nil {
		if s.keep {
			has, err := s.sp.HasFingerprint(ctx, s.opts.Name, fp)
			if err != nil {
				// Looked up again before it is taken.
				s.log.Warn("folder: fingerprint lookup failed", "file", ref(rel), "err", err)
			} else if has {
				s.known[rel] = fp
				return
			}
		}
		s.track(rel, fi)
		s.count(func(st *Stats) { st.Seen++ })
		s.log.Debug("folder: new file", "path", rel, "file", ref(rel), "size", fi.Size())
		return
	}
	if c.size != fi.Size() || !c.mtime.Equal(fi.ModTime()) {
		s.changed(rel, c, fi)
	}
}

// considerLink ignores links whose target is inside the root (the target is taken
// under its own name) and rejects links that lead outside, moving the link aside.
func (s *Source) considerLink(ctx context.Context, p, rel string, fi fs.FileInfo) {
	delete(s.pending, rel)
	if s.linkInside(p) {
		s.log.Debug("folder: ignoring symlink inside the watched folder", "path", rel, "file", ref(rel))
		s.known[rel] = fingerprint(rel, fi)
		return
	}
	s.count(func(st *Stats) { st.Seen++ })
	s.reject(ctx, p, rel, fi, 0, "symlink points outside the watched folder")
}

// linkInside says whether the link at p resolves to a place inside the root. A link
// that does not resolve (dangling, loop) is judged by its text.
func (s *Source) linkInside(p string) bool {
	root := s.rootReal
	if root == "" {
		root = s.root
	}
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		t, err := os.Readlink(p)
		if err != nil {
			return false
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		target = filepath.Clean(t)
		root = s.root
	}
	r, err := filepath.Rel(root, target)
	return err == nil && r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator)) && !filepath.IsAbs(r)
}

// checkDue takes every candidate whose settle time has passed, in the order they
// became due.
func (s *Source) checkDue(ctx context.Context) {
	now := s.now()
	var due []string
	for len(s.queue) > 0 && !s.queue[0].at.After(now) {
		e := heap.Pop(&s.queue).(dueEntry)
		if c := s.pending[e.rel]; c != nil && c.due(s.opts.Settle).Equal(e.at) {
			due = append(due, e.rel)
		}
	}
	for _, rel := range due {
		if ctx.Err() != nil {
			return
		}
		c := s.pending[rel]
		if c == nil || c.due(s.opts.Settle).After(now) {
			continue // taken, gone or rescheduled meanwhile (or listed twice)
		}
		p := s.abs(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				delete(s.pending, rel)
			} else {
				s.retryIn(rel, c, s.opts.Settle)
			}
			continue
		}
		if !fi.Mode().IsRegular() {
			delete(s.pending, rel)
			s.consider(ctx, p, rel, fi)
			continue
		}
		if c.size != fi.Size() || !c.mtime.Equal(fi.ModTime()) {
			s.changed(rel, c, fi)
			continue
		}
		s.take(ctx, p, rel, c, fi)
	}
}

// fingerprint identifies one state of a file for after: keep: path, size and mtime.
func fingerprint(rel string, fi fs.FileInfo) string {
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
