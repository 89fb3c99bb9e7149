package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
)

// backend is what the server needs from a storage backend beyond tusd's
// DataStore: finding an upload by courier-id, a place for digest state, and
// removing abandoned uploads.
type backend interface {
	store() handler.DataStore
	terminater() handler.TerminaterDataStore
	// lookup returns the tus upload id of the upload stored under
	// courierID, or "" when there is none.
	lookup(ctx context.Context, courierID string) (string, error)
	// loadState returns nil, nil when the upload has no state.
	loadState(ctx context.Context, id string) ([]byte, error)
	saveState(ctx context.Context, id string, data []byte) error
	deleteState(ctx context.Context, id string) error
	// abandoned lists incomplete uploads untouched since before.
	abandoned(ctx context.Context, before time.Time) ([]string, error)
	// lastTouched is when anything of upload id was last written.
	lastTouched(ctx context.Context, id string) (time.Time, error)
	// purge removes what termination leaves behind for id, if anything.
	purge(ctx context.Context, id string) error
	// discard removes whatever is stored for courierID (bytes, info, part,
	// digest state), for a creation that failed half-way.
	discard(ctx context.Context, courierID string) error
	// ready returns an error when the store cannot take writes now.
	ready(ctx context.Context) error
}

func openBackend(ctx context.Context, store string) (backend, error) {
	if store == "" {
		store = "file://./var/objects"
	}
	u, err := url.Parse(store)
	if err != nil {
		return nil, fmt.Errorf("%w: store %q: %w", ErrInvalidOptions, store, err)
	}
	switch u.Scheme {
	case "file":
		dir := u.Path
		if u.Host != "" {
			// file://./var/objects: the host part is "." for a relative path.
			dir = u.Host + u.Path
		}
		if dir == "" {
			return nil, fmt.Errorf("%w: store %q: file:// needs a directory", ErrInvalidOptions, store)
		}
		return newFileBackend(dir)
	case "s3":
		return newS3Backend(ctx, u)
	default:
		return nil, fmt.Errorf("%w: store %q: scheme must be file:// or s3://", ErrInvalidOptions, store)
	}
}

const stateSuffix = ".sha256state"

// fileBackend is tusd's filestore in one directory: <id> (the bytes),
// <id>.info (tusd's metadata) and <id>.sha256state (the running digest).
type fileBackend struct {
	dir string
	fs  fileStore
}

func newFileBackend(dir string) (*fileBackend, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("file store %s: %w", dir, err)
	}
	return &fileBackend{dir: dir, fs: fileStore{filestore.New(dir)}}, nil
}

// fileStore is tusd's filestore with a create that cannot leave a torn
// .info: tusd writes it in place (a full disk leaves it empty, and leaks the
// descriptor); here it is written to a temporary name and renamed. The
// layout and JSON are tusd's, so tusd reads what this writes.
type fileStore struct {
	filestore.FileStore
}

func (s fileStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	if info.ID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		info.ID = hex.EncodeToString(b[:])
	}
	binPath := filepath.Join(s.Path, info.ID)
	infoPath := binPath + ".info"
	info.Storage = map[string]string{"Type": "filestore", filestore.StorageKeyPath: binPath, filestore.StorageKeyInfoPath: infoPath}
	data, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(binPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(infoPath, data); err != nil {
		_ = os.Remove(binPath)
		return nil, err
	}
	return s.FileStore.GetUpload(ctx, info.ID)
}

// writeFileAtomic writes data to path under a temporary name and renames it,
// so path is either absent or whole.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Close()); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

func (b *fileBackend) store() handler.DataStore                { return b.fs }
func (b *fileBackend) terminater() handler.TerminaterDataStore { return b.fs }

func (b *fileBackend) lookup(ctx context.Context, courierID string) (string, error) {
	_, err := os.Stat(filepath.Join(b.dir, courierID+".info"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("file store %s: look up %s: %w", b.dir, courierID, err)
	}
	return courierID, nil
}

func (b *fileBackend) statePath(id string) string {
	return filepath.Join(b.dir, id+stateSuffix)
}

func (b *fileBackend) loadState(ctx context.Context, id string) ([]byte, error) {
	data, err := os.ReadFile(b.statePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

func (b *fileBackend) saveState(ctx context.Context, id string, data []byte) error {
	return writeFileAtomic(b.statePath(id), data)
}

func (b *fileBackend) deleteState(ctx context.Context, id string) error {
	err := os.Remove(b.statePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (b *fileBackend) purge(ctx context.Context, id string) error { return nil }

func (b *fileBackend) discard(ctx context.Context, courierID string) error {
	var errs []error
	for _, p := range []string{filepath.Join(b.dir, courierID), filepath.Join(b.dir, courierID+".info"),
		filepath.Join(b.dir, courierID+".info.tmp"), b.statePath(courierID), b.statePath(courierID) + ".tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ready writes and removes a small file: a full or read-only directory fails.
func (b *fileBackend) ready(ctx context.Context) error {
	f, err := os.CreateTemp(b.dir, ".readyz-*")
	if err != nil {
		return fmt.Errorf("file store %s: %w", b.dir, err)
	}
	_, werr := f.Write(make([]byte, 4096))
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	_ = os.Remove(f.Name())
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("file store %s: %w", b.dir, err)
	}
	return nil
}

func (b *fileBackend) abandoned(ctx context.Context, before time.Time) ([]string, error) {
	infos, err := filepath.Glob(filepath.Join(b.dir, "*.info"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range infos {
		id := strings.TrimSuffix(filepath.Base(p), ".info")
		up, err := b.fs.GetUpload(ctx, id)
		if err != nil {
			// A torn .info (a create cut short) expires like an abandoned upload.
			if isJSONError(err) {
				if touched, err := b.lastTouched(ctx, id); err == nil && touched.Before(before) {
					out = append(out, id)
				}
			}
			continue
		}
		info, err := up.GetInfo(ctx)
		if err != nil || (!info.SizeIsDeferred && info.Offset == info.Size) {
			continue
		}
		touched, err := b.lastTouched(ctx, id)
		if err != nil {
			continue
		}
		if touched.Before(before) {
			out = append(out, id)
		}
	}
	return out, nil
}

func (b *fileBackend) lastTouched(ctx context.Context, id string) (time.Time, error) {
	var touched time.Time
	found := false
	for _, f := range []string{filepath.Join(b.dir, id+".info"), filepath.Join(b.dir, id), b.statePath(id)} {
		if fi, err := os.Stat(f); err == nil {
			found = true
			if fi.ModTime().After(touched) {
				touched = fi.ModTime()
			}
		}
	}
	if !found {
		return touched, handler.ErrNotFound
	}
	return touched, nil
}
