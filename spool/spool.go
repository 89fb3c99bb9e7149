package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
)

// Options configure a spool. Zero values mean: no cap, keep_done 168h.
type Options struct {
	Dir         string        // agent.data_dir: spool.db and content/ live here
	MaxBytes    int64         // spool.max_bytes; 0 = no cap
	MinFreeDisk int64         // spool.min_free_disk; 0 = no floor
	KeepDone    time.Duration // spool.keep_done
	// Sinks names the event sinks ("file", "mqtt"). Each event gets one outbox row per sink;
	// an item becomes published when every sink has its event. Empty means one sink
	// named "default". On a non-shared Open with Sinks set, unpublished rows of sinks no
	// longer listed are dropped (the sink was removed from the config), so items cannot
	// get stuck verified.
	Sinks   []string
	Inspect Inspector // may be nil
	Logger  *slog.Logger
	Now     func() time.Time // for tests; nil = time.Now
	// Shared opens without the process lock and without recovery, for CLI commands
	// (status, spool ls/show/retry, events replay) run beside a live agent.
	Shared bool
}

// DefaultKeepDone is used when Options.KeepDone is zero.
const DefaultKeepDone = 168 * time.Hour

// DefaultSink is the sink name used when Options.Sinks is empty.
const DefaultSink = "default"

// busyTimeout is how long a write waits for another connection or process (a CLI
// command beside the agent) to finish its transaction.
const busyTimeout = 30 * time.Second

// ListFilter selects items for List.
type ListFilter struct {
	State State // "" = all
	Limit int   // 0 = no limit
}

// Spool is the durable queue. Safe for concurrent use by many goroutines of one process.
type Spool struct {
	opts  Options
	dir   string
	sinks []string
	log   *slog.Logger
	now   func() time.Time

	// w has exactly one connection and begins IMMEDIATE transactions: writes of this
	// process are serialised by the pool, writes of other processes by busy_timeout.
	w *sql.DB
	// r is a pool of read-only connections; WAL lets them read while w writes.
	r *sql.DB

	lock  *fileLock // nil when Shared
	ready chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the spool in opts.Dir, takes the process lock
// (ErrLocked if another process holds it), and recovers: removes half-written temp
// files, clears stale leases so uploading items resume, finishes items whose
// events were all published.
func Open(ctx context.Context, opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: Options.Dir is empty")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", opts.Dir, err)
	}
	if opts.KeepDone <= 0 {
		opts.KeepDone = DefaultKeepDone
	}
	s := &Spool{
		opts:  opts,
		dir:   dir,
		sinks: opts.Sinks,
		log:   opts.Logger,
		now:   opts.Now,
		ready: make(chan struct{}, 1),
	}
	if len(s.sinks) == 0 {
		s.sinks = []string{DefaultSink}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, d := range []string{dir, s.contentDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("spool %s: create %s: %w", dir, d, err)
		}
	}
	if !opts.Shared {
		s.lock, err = lockFile(filepath.Join(dir, "lock"))
		if err != nil {
			if errors.Is(err, ErrLocked) {
				return nil, fmt.Errorf("spool %s: %w", dir, ErrLocked)
			}
			return nil, fmt.Errorf("spool %s: lock: %w", dir, err)
		}
	}
	if err := s.openDB(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if !opts.Shared {
		if err := s.recover(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("spool %s: recover: %w", dir, err)
		}
		s.signal()
	}
	return s, nil
}

func (s *Spool) openDB(ctx context.Context) error {
	path := filepath.Join(s.dir, "spool.db")
	common := fmt.Sprintf("_busy_timeout=%d&_foreign_keys=1", busyTimeout.Milliseconds())
	// synchronous=FULL: a commit is on disk when it returns, which is what lets a source
	// delete its file right after Receive.
	wdsn := path + "?" + common + "&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"
	rdsn := path + "?" + common + "&_query_only=1"
	var err error
	if s.w, err = sql.Open("sqlite", wdsn); err != nil {
		return fmt.Errorf("spool %s: open database: %w", s.dir, err)
	}
	// One connection: a transaction owns the writer until it ends, so code holding
	// a transaction must never use s.w (or a method that does) before finishing it.
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxIdleTime(0)
	s.w.SetConnMaxLifetime(0)
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("spool %s: open database: %w", s.dir, err)
	}
	if err := s.migrate(ctx); err != nil {
		return fmt.Errorf("spool %s: schema: %w", s.dir, err)
	}
	if s.r, err = sql.Open("sqlite", rdsn); err != nil {
		return fmt.Errorf("spool %s: open database: %w", s.dir, err)
	}
	s.r.SetMaxOpenConns(4)
	s.r.SetMaxIdleConns(4)
	return nil
}

// Close releases the lock and the database.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		if s.w != nil {
			errs = append(errs, s.w.Close())
		}
		if s.lock != nil {
			errs = append(errs, s.lock.unlock())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("spool %s: close: %w", s.dir, err)
		}
	})
	return s.closeErr
}

// Dir is the spool's directory (absolute).
func (s *Spool) Dir() string { return s.dir }

// Ready is signalled (non-blocking, coalescing) whenever an item may have become leasable:
// after an intake, a retry, a release or a transition to waiting. It is per process: an
// item retried by a CLI command is only seen by the agent's next poll.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

func (s *Spool) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// ContentPath is where the item's bytes are stored.
func (s *Spool) ContentPath(id string) string {
	shard := id
	if len(id) >= 2 {
		shard = id[len(id)-2:]
	}
	return filepath.Join(s.contentDir(), shard, id)
}

// OpenContent opens the item's stored bytes for reading.
func (s *Spool) OpenContent(id string) (*os.File, error) {
	f, err := os.Open(s.ContentPath(id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("spool %s: content of item %s: %w", s.dir, id, ErrNotFound)
		}
		return nil, fmt.Errorf("spool %s: content of item %s: %w", s.dir, id, err)
	}
	return f, nil
}

func (s *Spool) contentDir() string { return filepath.Join(s.dir, "content") }
func (s *Spool) tmpDir() string     { return filepath.Join(s.dir, "tmp") }

func (s *Spool) nowUTC() time.Time { return s.now().UTC() }

// write runs fn in one IMMEDIATE transaction on the single writer connection.
func (s *Spool) write(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", what, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", what, err)
	}
	return nil
}

// dbFull reports SQLITE_FULL: the disk filled up under the database.
func dbFull(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqliteFull
}

const sqliteFull = 13 // SQLITE_FULL

// removeContent deletes the item's bytes and makes the removal durable.
func (s *Spool) removeContent(id string) error {
	p := s.ContentPath(id)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(p))
}

// recover brings the spool back to a consistent state after whatever stopped the last
// process: a clean shutdown, a crash, a power cut. Only the lock holder runs it.
func (s *Spool) recover(ctx context.Context) error {
	// Half-written files: their rows were never committed, their sources still exist.
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("read tmp: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return fmt.Errorf("remove temp file: %w", err)
		}
	}
	if len(ents) > 0 {
		s.log.Info("spool: removed temp files left by a crash", "count", len(ents))
	}

	var leases, dropped int64
	err = s.write(ctx, "recover", func(tx *sql.Tx) error {
		// Leases of a dead process: the items stay uploading with their upload URL and
		// become leasable at once, so the uploader resumes with a HEAD.
		res, err := tx.ExecContext(ctx, `UPDATE items SET lease_owner = '', lease_until = 0
			WHERE lease_owner != '' OR lease_until != 0`)
		if err != nil {
			return err
		}
		leases, _ = res.RowsAffected()
		// A sink removed from the config would hold its items verified (bytes and all)
		// for ever. Only an explicit list counts: an empty one is more likely a wiring
		// slip than a wish to lose events.
		if len(s.opts.Sinks) > 0 {
			q, args := `DELETE FROM outbox WHERE published_at = 0 AND sink NOT IN (`, []any{}
			for i, sink := range s.sinks {
				if i > 0 {
					q += ", "
				}
				q += "?"
				args = append(args, sink)
			}
			if res, err = tx.ExecContext(ctx, q+")", args...); err != nil {
				return err
			}
			dropped, _ = res.RowsAffected()
		}
		// Verified items whose events all went out (or whose last sinks were dropped).
		_, err = tx.ExecContext(ctx, `UPDATE items SET state = 'published', updated_at = ?
			WHERE state = 'verified' AND NOT EXISTS (SELECT 1 FROM outbox o
				WHERE o.item_id = items.id AND o.type = ? AND o.published_at = 0)`,
			nanos(s.nowUTC()), EventVerified)
		return err
	})
	if err != nil {
		return err
	}
	if leases > 0 {
		s.log.Info("spool: cleared leases of the previous process", "count", leases)
	}
	if dropped > 0 {
		s.log.Warn("spool: dropped unpublished events of sinks no longer configured", "count", dropped)
	}

	if err := s.finishPublished(ctx); err != nil {
		return err
	}

	// Content without a row (crash between rename and commit) or whose row no longer
	// holds bytes (crash between commit and removal).
	stored := map[string]bool{}
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM items WHERE stored = 1`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		stored[id] = false
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var orphans int
	shards, err := os.ReadDir(s.contentDir())
	if err != nil {
		return fmt.Errorf("read content: %w", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() {
			continue
		}
		shardDir := filepath.Join(s.contentDir(), sh.Name())
		files, err := os.ReadDir(shardDir)
		if err != nil {
			return fmt.Errorf("read content: %w", err)
		}
		removed := false
		for _, f := range files {
			if _, ok := stored[f.Name()]; ok {
				stored[f.Name()] = true
				continue
			}
			if err := os.RemoveAll(filepath.Join(shardDir, f.Name())); err != nil {
				return fmt.Errorf("remove orphan content: %w", err)
			}
			orphans++
			removed = true
		}
		if removed {
			if err := syncDir(shardDir); err != nil {
				return err
			}
		}
	}
	if orphans > 0 {
		s.log.Info("spool: removed content without a committed item", "count", orphans)
	}
	for id, found := range stored {
		if !found {
			// Should never happen (the bytes are durable before the row); the uploader
			// will fail to open it and quarantine the item for a person to look at.
			s.log.Error("spool: item has no content file", "id", id)
		}
	}
	return nil
}

// finishPublished finishes every item whose events are out but whose bytes may still
// be here.
func (s *Spool) finishPublished(ctx context.Context) error {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM items WHERE state = 'published'`)
	if err != nil {
		return fmt.Errorf("spool %s: published items: %w", s.dir, err)
	}
	var published []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("spool %s: published items: %w", s.dir, err)
		}
		published = append(published, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("spool %s: published items: %w", s.dir, err)
	}
	for _, id := range published {
		if err := s.finish(ctx, id); err != nil {
			return err
		}
	}
	return nil
}
