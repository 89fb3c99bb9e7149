package folder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgecourier/courier/spool"
)

// fullLogEvery limits the "spool full" log line.
const fullLogEvery = time.Minute

// maxNameBytes is the longest file name most filesystems take (ext4, NTFS in UTF-16
// units is more, but bytes is the stricter measure for what we write).
const maxNameBytes = 255

func (s *Source) intake(rel string, fi fs.FileInfo) spool.Intake {
	in := spool.Intake{
		Source:     s.opts.Name,
		SourceKind: "folder",
		SourceRef:  rel,
		Filename:   path.Base(rel),
		Priority:   s.opts.Priority,
		MaxSize:    s.opts.MaxSize,
		NoInspect:  s.opts.NoInspect,
	}
	if s.keep {
		in.Fingerprint = fingerprint(s.abs(rel), rel, fi)
	}
	return in
}

// take hands a settled file to the spool and releases it once it is durable. It is
// called with s.smu held (and holds it again when it returns).
func (s *Source) take(ctx context.Context, p, rel string, c *candidate, fi fs.FileInfo) {
	fp := fingerprint(p, rel, fi)
	if s.opts.MaxSize > 0 && fi.Size() > s.opts.MaxSize {
		s.reject(ctx, p, rel, fi, fi.Size(), s.tooLarge(fi.Size()))
		return
	}
	// The checks and the intake below run outside s.smu, so that several files are
	// read, fsynced and committed together (group commit); the source's state is only
	// touched with s.smu held.
	s.smu.Unlock()
	f, err := s.open(p)
	var held bool
	var herr error
	if err == nil {
		f.Close()
		// Settled by size and mtime, but a writer may only have paused: a file some
		// process still holds open for writing is not finished.
		held, herr = heldForWriting(p, fi)
	}
	s.smu.Lock()
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			delete(s.pending, rel)
		case isBusy(err):
			// Still open for writing elsewhere (Windows sharing violation): not yet.
			s.log.Debug("folder: file is locked by another program, waiting", "path", rel, "file", ref(rel))
			s.retryIn(rel, c, s.opts.Settle)
		case errors.Is(err, fs.ErrPermission):
			s.reject(ctx, p, rel, fi, fi.Size(), "file cannot be read: permission denied")
		default:
			s.log.Warn("folder: cannot open file, will try again", "file", ref(rel), "err", errKind(err))
			s.retryIn(rel, c, s.opts.Rescan)
		}
		return
	}
	if herr == nil && held {
		s.log.Debug("folder: file is still open for writing, waiting", "path", rel, "file", ref(rel))
		s.retryIn(rel, c, s.opts.Settle)
		return
	} else if herr != nil && !errors.Is(herr, fs.ErrNotExist) {
		s.log.Debug("folder: cannot tell whether the file is open for writing", "file", ref(rel), "err", errKind(herr))
	}
	in := s.intake(rel, fi)
	if s.keep {
		s.smu.Unlock()
		has, err := s.hasFingerprint(ctx, rel, fp, fi)
		s.smu.Lock()
		if err != nil {
			s.log.Warn("folder: fingerprint lookup failed, will try again", "file", ref(rel), "err", redact(err, p))
			s.retryIn(rel, c, s.opts.Rescan)
			return
		}
		if has {
			delete(s.pending, rel)
			s.known[rel] = fp
			return
		}
	}
	// Always a copy. A hard link would share the stored bytes with the folder's name
	// until we delete it; if that delete fails (a virus scanner holds the file) or the
	// agent dies first, an exporter that rewrites the same name in place (fixed-name
	// lab exports) would change a committed item. A zero-copy intake needs a journaled
	// rename in the spool; until then correctness wins over one extra copy.
	start := time.Now()
	s.smu.Unlock()
	it, err := s.sp.ReceiveFile(ctx, in, p)
	s.smu.Lock()
	if err != nil {
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, spool.ErrFull):
			s.retryIn(rel, c, min(5*time.Second, s.opts.Rescan))
			if now := s.now(); now.Sub(s.fullLogged) >= fullLogEvery {
				s.fullLogged = now
				s.log.Warn("folder: spool is full, leaving files in the folder until uploads make room",
					"err", redact(err, p))
			}
		case errors.Is(err, spool.ErrTooLarge):
			size := fi.Size()
			if now, err := os.Stat(p); err == nil {
				size = now.Size()
			}
			s.reject(ctx, p, rel, fi, size, s.tooLarge(size))
		case errors.Is(err, fs.ErrNotExist):
			delete(s.pending, rel)
		case isBusy(err):
			s.retryIn(rel, c, s.opts.Settle)
		default:
			// Includes permission errors: readability was checked when the file was
			// opened above, so a permission error here is the spool's own (data_dir not
			// writable, a scanner holding the new file) and no reason to reject.
			// Never lose the file: it stays, and the next scan offers it again.
			s.log.Error("folder: receiving file failed, will try again", "file", ref(rel), "err", redact(err, p))
			delete(s.pending, rel)
		}
		return
	}
	delete(s.pending, rel)
	s.count(func(st *counters) { st.Taken++ })
	s.log.Info("folder: file taken", "id", it.ID, "file", ref(rel), "size", it.Size, "sha256", it.SHA256,
		"state", it.State, "took", time.Since(start).Round(time.Millisecond))
	s.log.Debug("folder: file taken", "id", it.ID, "path", rel)

	// Checked once more before the file is released: written to while we read it, or
	// opened for writing again (a writer that paused longer than settle), or replaced
	// under its name. What was stored is then an earlier state: the file stays and is
	// taken again once it settles.
	s.smu.Unlock()
	why, now := s.changedSince(p, fi, it)
	s.smu.Lock()
	if why != "" {
		// The spool has no way yet to withdraw the item (it goes out as it was
		// stored); what matters here is that the file itself is not released.
		s.log.Warn("folder: file changed before it could be released, leaving it to be taken again",
			"id", it.ID, "file", ref(rel), "why", why, "size", it.Size, "size_now", now.Size())
		s.track(rel, now)
		return
	}
	if s.keep {
		s.kept[rel] = keptFile{weak: weakFingerprint(rel, fi), sha256: it.SHA256}
	}
	if err := s.release(p, rel, it.ID, fp); err != nil {
		// Taken, but still there: don't take it again as long as it is unchanged, and
		// try again at each rescan (a virus scanner may hold it for a moment).
		s.log.Error("folder: file is in the spool but could not be released from the folder, will try again",
			"id", it.ID, "file", ref(rel), "after", afterKind(s.opts.After), "err", redact(err, p))
		s.known[rel] = fp
		s.stuck[rel] = stuck{fp: fp, id: it.ID}
	}
}

// changedSince says why the file at p is no longer the state fi that was stored as
// it ("" if it still is), with what it is now.
func (s *Source) changedSince(p string, fi fs.FileInfo, it *spool.Item) (string, fs.FileInfo) {
	now, err := os.Lstat(p)
	if err != nil {
		return "", fi // gone: nothing left to release
	}
	switch {
	case it.Size != fi.Size():
		return "stored size differs", now
	case now.Size() != fi.Size() || !now.ModTime().Equal(fi.ModTime()):
		return "size or mtime changed", now
	case !os.SameFile(fi, now) || identity(p, fi) != identity(p, now):
		return "replaced or rewritten", now
	}
	if held, err := heldForWriting(p, now); err == nil && held {
		return "open for writing", now
	}
	return "", now
}

// keptFile is what after: keep remembers of a taken file: its path/size/mtime and
// the SHA-256 stored, so that when only its identity or ctime changes the content
// decides whether it is new.
type keptFile struct{ weak, sha256 string }

// sameContent: with after: keep, a file whose path, size and mtime are those of
// the state taken, but whose identity or ctime changed, is compared by content.
func (s *Source) sameContent(p, rel string, fi fs.FileInfo) bool {
	k, ok := s.kept[rel]
	if !s.keep || !ok || k.weak != weakFingerprint(rel, fi) || !fi.Mode().IsRegular() {
		return false
	}
	f, err := s.open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == k.sha256
}

// hasFingerprint asks the spool about fp, and about the path/size/mtime
// fingerprint that versions before the identity was added recorded, so an upgrade
// does not take every kept file again.
func (s *Source) hasFingerprint(ctx context.Context, rel, fp string, fi fs.FileInfo) (bool, error) {
	has, err := s.sp.HasFingerprint(ctx, s.opts.Name, fp)
	if err != nil || has {
		return has, err
	}
	return s.sp.HasFingerprint(ctx, s.opts.Name, weakFingerprint(rel, fi))
}

// stuck is a file dealt with in the spool (taken or rejected) that could not be
// released or moved aside yet.
type stuck struct {
	fp, id string
	reason string // "" for a taken file; for a rejected one, why
}

// retryStuck tries again to release or move aside what could not be before. A file
// that changed meanwhile is new work and was already found as such by the scan.
func (s *Source) retryStuck() {
	for rel, st := range s.stuck {
		p := s.abs(rel)
		fi, err := os.Lstat(p)
		if err != nil || fingerprint(p, rel, fi) != st.fp {
			delete(s.stuck, rel)
			continue
		}
		if st.reason != "" {
			_, err = s.moveAside(p, rel, st.id, st.reason)
		} else {
			err = s.release(p, rel, st.id, st.fp)
		}
		if err != nil {
			s.log.Debug("folder: still cannot release file", "id", st.id, "path", rel, "err", err)
			continue
		}
		s.log.Info("folder: file released after all", "id", st.id, "file", ref(rel))
		delete(s.stuck, rel)
		delete(s.known, rel)
	}
}

// release applies after: once the item is durable.
func (s *Source) release(p, rel, id, fp string) error {
	switch {
	case s.keep:
		s.known[rel] = fp
		return nil
	case s.move != "":
		dst, err := freeName(filepath.Join(s.move, filepath.FromSlash(rel)), id)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
			return fmt.Errorf("create move target folder: %w", err)
		}
		if err := moveFile(p, dst); err != nil {
			return err
		}
		s.log.Debug("folder: file moved", "id", id, "path", rel, "to", dst)
		return nil
	default:
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete: %w", err)
		}
		return nil
	}
}

func (s *Source) tooLarge(size int64) string {
	return fmt.Sprintf("size %d exceeds max_size %d for source %s", size, s.opts.MaxSize, s.opts.Name)
}

// reject records a rejected item (and its event), then moves the file (or link) to
// .courier-rejected/<rel> with a <name>.reason.txt beside it.
func (s *Source) reject(ctx context.Context, p, rel string, fi fs.FileInfo, size int64, reason string) {
	delete(s.pending, rel)
	it, err := s.sp.Reject(ctx, s.intake(rel, fi), size, reason)
	if err != nil {
		if ctx.Err() == nil {
			// Nothing recorded: the file stays and the next scan tries again.
			s.log.Error("folder: recording a rejected file failed, will try again", "file", ref(rel),
				"reason", reason, "err", redact(err, p))
		}
		return
	}
	s.count(func(st *counters) { st.Rejected++ })
	s.log.Warn("folder: file rejected", "id", it.ID, "file", ref(rel), "size", size, "reason", reason)
	dst, err := s.moveAside(p, rel, it.ID, reason)
	if err != nil {
		// Recorded, but it could not be moved: remember it so it is not rejected on
		// every scan (in keep mode the spool remembers it across restarts too).
		s.log.Error("folder: rejected file could not be moved aside; it stays in the folder, will try again",
			"id", it.ID, "file", ref(rel), "err", redact(err, p))
		fp := fingerprint(p, rel, fi)
		s.known[rel] = fp
		s.stuck[rel] = stuck{fp: fp, id: it.ID, reason: reason}
		return
	}
	s.log.Debug("folder: rejected file moved aside", "id", it.ID, "path", rel, "to", dst)
}

func (s *Source) moveAside(p, rel, id, reason string) (string, error) {
	dst, err := freeName(filepath.Join(s.rejDir, filepath.FromSlash(rel)), id)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return "", fmt.Errorf("create %s folder: %w", RejectedDir, err)
	}
	if err := moveFile(p, dst); err != nil {
		return "", err
	}
	note := fmt.Sprintf("%s\nitem: %s\nsource: %s\nrejected_at: %s\n", reason, id, s.opts.Name,
		s.now().UTC().Format(time.RFC3339))
	rp := filepath.Join(filepath.Dir(dst), fitName(filepath.Base(dst), ".reason.txt"))
	if err := writeNew(rp, []byte(note)); err != nil {
		// The file is aside and the reason is in the spool and the event.
		s.log.Error("folder: could not write the reason file", "id", id, "err", redact(err, rp))
	}
	return dst, nil
}

// moveFile renames src to dst, copying across filesystems (a move target on another
// disk). It never follows a symlink: a link is renamed, never copied.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil || !isCrossDevice(err) {
		if err != nil {
			return fmt.Errorf("move: %w", err)
		}
		return nil
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("move: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("move: %s cannot be copied to another filesystem", kindOf(fi.Mode()))
	}
	if err := copyFile(src, dst, fi); err != nil {
		return fmt.Errorf("move across filesystems: %w", err)
	}
	if err := os.Remove(src); err != nil {
		return fmt.Errorf("move across filesystems: remove original: %w", err)
	}
	return nil
}

// copyFile copies src to dst through a temp file, fsynced before it takes dst's name.
func copyFile(src, dst string, fi fs.FileInfo) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(dst), ".courier-move-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	if _, err = io.Copy(out, in); err != nil {
		return err
	}
	if err = out.Sync(); err != nil {
		return err
	}
	if err = out.Close(); err != nil {
		return err
	}
	os.Chmod(out.Name(), fi.Mode().Perm())
	os.Chtimes(out.Name(), fi.ModTime(), fi.ModTime())
	return os.Rename(out.Name(), dst)
}

// freeName returns dst, or if that name is taken, dst with ".<id>" before its
// extension, so nothing already moved there is overwritten.
func freeName(dst, id string) (string, error) {
	if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
		return dst, nil
	} else if err != nil {
		return "", fmt.Errorf("check target name: %w", err)
	}
	base := filepath.Base(dst)
	ext := filepath.Ext(base)
	if len(ext) > 32 || ext == base {
		ext = ""
	}
	name := fitName(strings.TrimSuffix(base, ext), "."+id+ext)
	return filepath.Join(filepath.Dir(dst), name), nil
}

// fitName is head+tail, with head shortened (at a character boundary, plus a short
// hash so shortened names stay distinct) when the whole would exceed maxNameBytes.
func fitName(head, tail string) string {
	if len(head)+len(tail) <= maxNameBytes {
		return head + tail
	}
	mark := "~" + ref(head)[:8]
	n := maxNameBytes - len(tail) - len(mark)
	if n < 0 {
		n = 0
	}
	for n > 0 && !utf8.RuneStart(head[n]) {
		n--
	}
	return head[:n] + mark + tail
}

// redact is err's text without the file's path (names may carry patient names).
func redact(err error, p string) string {
	msg := err.Error()
	if p != "" {
		msg = strings.ReplaceAll(msg, p, "<file>")
	}
	return msg
}

// writeNew writes a file that must not exist yet: a reason note never replaces a
// rejected file that happens to carry the same name.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
