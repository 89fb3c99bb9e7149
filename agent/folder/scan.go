package folder

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

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
	for rel := range s.kept {
		if !files[rel] {
			delete(s.kept, rel)
		}
	}
	for d := range s.watched {
		if !dirs[d] {
			s.unwatch(d)
		}
	}
	s.retryStuck()
	s.pruneFingerprints(ctx)
	s.count(func(st *counters) { st.LastScan = s.now() })
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
	delete(s.kept, rel)
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
			delete(s.kept, r)
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
	fp := fingerprint(p, rel, fi)
	if s.known[rel] == fp {
		return
	}
	if s.sameContent(p, rel, fi) {
		s.known[rel] = fp // only the identity or ctime changed (chmod, a copy over itself)
		return
	}
	delete(s.known, rel)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		s.considerLink(ctx, p, rel, fi)
		return
	case !fi.Mode().IsRegular():
		delete(s.pending, rel)
		s.count(func(st *counters) { st.Seen++ })
		s.reject(ctx, p, rel, fi, 0, "not a regular file ("+kindOf(fi.Mode())+")")
		return
	}
	c := s.pending[rel]
	if c == nil {
		if s.keep {
			has, err := s.hasFingerprint(ctx, rel, fp, fi)
			if err != nil {
				// Looked up again before it is taken.
				s.log.Warn("folder: fingerprint lookup failed", "file", ref(rel), "err", err)
			} else if has {
				s.known[rel] = fp
				return
			}
		}
		s.track(rel, fi)
		s.count(func(st *counters) { st.Seen++ })
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
		s.known[rel] = fingerprint(p, rel, fi)
		return
	}
	s.count(func(st *counters) { st.Seen++ })
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
