package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
)

// Options configure a spool. Zero values mean: no cap, keep_done 168h, keep_audit 2 years.
type Options struct {
	Dir string // agent.data_dir: spool.db and content/ live here
	// MaxBytes is spool.max_bytes; 0 = no cap.
	MaxBytes int64
	// MinFreeDisk is spool.min_free_disk. Intake also keeps a reserve for the database
	// (see room.go) whatever this says, 0 included.
	MinFreeDisk int64
	KeepDone    time.Duration // spool.keep_done
	KeepAudit   time.Duration // spool.keep_audit: how long audit rows stay
	// Sinks names the event sinks ("file", "mqtt"). Each event gets one outbox row per sink;
	// an item becomes published when every sink has its event. Empty means one sink
	// named "default". On a non-shared Open with Sinks set, unpublished rows of sinks no
	// longer listed are dropped (the sink was removed from the config), so items cannot
	// get stuck verified.
	Sinks   []string
	Inspect Inspector // may be nil
	// Split finds the parts of an item whose envelope has Parts > 0 (parts.go); nil = none.
	Split  Splitter
	Logger *slog.Logger
	Now    func() time.Time // for tests; nil = time.Now
	// Shared opens without the process lock and without recovery, for CLI commands
	// (spool ls/show/retry, events replay) run beside a live agent. Status, which must
	// never write, uses OpenReadOnly.
	Shared bool
}

// DefaultKeepDone is used when Options.KeepDone is zero.
const DefaultKeepDone = 168 * time.Hour

// DefaultSink is the sink name used when Options.Sinks is empty.
const DefaultSink = "default"

// busyTimeout is how long a write waits for another connection or process (a CLI
// command beside the agent) to finish its transaction.
const busyTimeout = 30 * time.Second

// RecoverCommand is what an operator runs when the database is lost or damaged.
const RecoverCommand = "courier spool recover --config <the agent's config file>"

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
	// Read-only spools have none.
	w *sql.DB
	// r is a pool of read-only connections; WAL lets them read while w writes.
	r *sql.DB
	// legacy: a read-only open of a database from before the running totals.
	legacy bool

	lock  *fileLock // nil when Shared or read-only
	ready chan struct{}
	group grouper // intakes committing together (group.go)

	closeOnce sync.Once
	closeErr  error
}

type openMode int

const (
	modeAgent    openMode = iota // lock, checks, migrate, recovery
	modeShared                   // checks, migrate
	modeReadOnly                 // checks only, nothing written
	modeRecover                  // lock; a damaged database is moved aside (Recover)
)

// Open opens (creating if needed) the spool in opts.Dir, takes the process lock
// (ErrLocked if another process holds it), checks the database (ErrCorrupt,
// ErrNeedsRecovery: both say to run RecoverCommand) and recovers: removes
// half-written temp files, clears stale leases so uploading items resume, finishes
// items whose events were all published, and takes back content the database does
// not know (from its description) instead of deleting it.
func Open(ctx context.Context, opts Options) (*Spool, error) {
	mode := modeAgent
	if opts.Shared {
		mode = modeShared
	}
	return open(ctx, opts, mode)
}

// OpenReadOnly opens the spool in dir for reading only (courier status): no lock, no
// migration, no recovery, the database opened mode=ro and query_only, so it works on
// a full disk and beside a running agent. A damaged database is ErrCorrupt, a lost
// one ErrNeedsRecovery; a missing one is fs.ErrNotExist.
func OpenReadOnly(ctx context.Context, dir string) (*Spool, error) {
	return open(ctx, Options{Dir: dir}, modeReadOnly)
}

func open(ctx context.Context, opts Options, mode openMode) (*Spool, error) {
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
	if opts.KeepAudit <= 0 {
		opts.KeepAudit = DefaultKeepAudit
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
	if mode == modeReadOnly {
		if _, err := os.Stat(s.dbPath()); err != nil {
			return nil, fmt.Errorf("spool %s: %w", dir, err)
		}
	} else {
		for _, d := range []string{dir, s.contentDir(), s.tmpDir()} {
			if err := os.MkdirAll(d, 0o750); err != nil {
				return nil, fmt.Errorf("spool %s: create %s: %w", dir, d, err)
			}
		}
	}
	if mode == modeAgent || mode == modeRecover {
		s.lock, err = lockFile(filepath.Join(dir, "lock"))
		if err != nil {
			if errors.Is(err, ErrLocked) {
				return nil, fmt.Errorf("spool %s: %w", dir, ErrLocked)
			}
			return nil, fmt.Errorf("spool %s: lock: %w", dir, err)
		}
	}
	if err := s.openDB(ctx, mode); err != nil {
		s.Close()
		return nil, err
	}
	if mode == modeAgent {
		if err := s.recover(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("spool %s: recover: %w", dir, err)
		}
		s.signal()
	}
	return s, nil
}

func (s *Spool) dbPath() string { return filepath.Join(s.dir, "spool.db") }

func (s *Spool) openDB(ctx context.Context, mode openMode) error {
	path := s.dbPath()
	common := fmt.Sprintf("_busy_timeout=%d&_foreign_keys=1", busyTimeout.Milliseconds())
	// synchronous=FULL: a commit is on disk when it returns, which is what lets a source
	// delete its file right after Receive.
	wdsn := path + "?" + common + "&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"
	rdsn := path + "?" + common + "&_query_only=1"
	if mode == modeReadOnly {
		// A file: URI so that SQLite itself opens the file read-only (mode=ro).
		u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: "mode=ro&" + common + "&_query_only=1"}
		if !strings.HasPrefix(u.Path, "/") {
			u.Path = "/" + u.Path
		}
		rdsn = u.String()
	}
	var err error
	if s.r, err = sql.Open("sqlite", rdsn); err != nil {
		return fmt.Errorf("spool %s: open database: %w", s.dir, err)
	}
	s.r.SetMaxOpenConns(4)
	s.r.SetMaxIdleConns(4)
	if mode != modeReadOnly {
		if s.w, err = sql.Open("sqlite", wdsn); err != nil {
			return fmt.Errorf("spool %s: open database: %w", s.dir, err)
		}
		// One connection: a transaction owns the writer until it ends, so code holding
		// a transaction must never use s.w (or a method that does) before finishing it.
		s.w.SetMaxOpenConns(1)
		s.w.SetMaxIdleConns(1)
		s.w.SetConnMaxIdleTime(0)
		s.w.SetConnMaxLifetime(0)
	}
	db := s.w
	if db == nil {
		db = s.r
	}
	v, err := s.checkDB(ctx, db)
	if err != nil {
		return err
	}
	// A database without a schema beside stored content: it was emptied, deleted or
	// lost its WAL. Migrating now would make an empty queue of it and the content
	// would look like leftovers, so stop and say what to do.
	if v == 0 && mode != modeRecover {
		if n, err := s.storedFiles(); err != nil {
			return fmt.Errorf("spool %s: read content: %w", s.dir, err)
		} else if n > 0 {
			return fmt.Errorf("spool %s: the database %s is new or empty but %s holds %d stored files: %w; "+
				"nothing was deleted: stop the agent and run `%s` to rebuild the rows from the files",
				s.dir, path, s.contentDir(), n, ErrNeedsRecovery, RecoverCommand)
		}
	}
	if mode == modeReadOnly {
		s.legacy = v < schemaVersion
		return nil
	}
	if err := s.migrate(ctx); err != nil {
		if corrupt(err) {
			return s.corruptErr(err.Error())
		}
		return fmt.Errorf("spool %s: schema: %w", s.dir, err)
	}
	return nil
}

// checkDB opens the database and runs PRAGMA quick_check; it returns the schema version.
func (s *Spool) checkDB(ctx context.Context, db *sql.DB) (int, error) {
	if err := db.PingContext(ctx); err != nil {
		if corrupt(err) {
			return 0, s.corruptErr(err.Error())
		}
		return 0, fmt.Errorf("spool %s: open database: %w", s.dir, err)
	}
	problems, err := quickCheck(ctx, db, 5)
	if err != nil {
		if corrupt(err) {
			return 0, s.corruptErr(err.Error())
		}
		return 0, fmt.Errorf("spool %s: check database: %w", s.dir, err)
	}
	if len(problems) > 0 {
		return 0, s.corruptErr(strings.Join(problems, "; "))
	}
	v, err := userVersion(ctx, db)
	if err != nil {
		if corrupt(err) {
			return 0, s.corruptErr(err.Error())
		}
		return 0, fmt.Errorf("spool %s: open database: %w", s.dir, err)
	}
	return v, nil
}

func (s *Spool) corruptErr(reason string) error {
	return fmt.Errorf("spool %s: the database %s is damaged (%s): %w; nothing was deleted: stop the agent "+
		"and run `%s`: it moves the damaged database aside and rebuilds the rows from the stored files",
		s.dir, s.dbPath(), reason, ErrCorrupt, RecoverCommand)
}

// quickCheck runs PRAGMA quick_check and returns up to max problems (none: healthy).
func quickCheck(ctx context.Context, db *sql.DB, max int) ([]string, error) {
	return pragmaCheck(ctx, db, fmt.Sprintf("PRAGMA quick_check(%d)", max))
}

func pragmaCheck(ctx context.Context, db *sql.DB, q string) ([]string, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		if p != "ok" {
			problems = append(problems, p)
		}
	}
	return problems, rows.Err()
}

// corrupt reports SQLITE_CORRUPT and SQLITE_NOTADB.
func corrupt(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	c := e.Code() & 0xff
	return c == sqliteCorrupt || c == sqliteNotADB
}

const (
	sqliteCorrupt = 11 // SQLITE_CORRUPT
	sqliteNotADB  = 26 // SQLITE_NOTADB
)

// storedFiles counts the files in content/ (bytes and descriptions).
func (s *Spool) storedFiles() (int, error) {
	shards, err := os.ReadDir(s.contentDir())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sh := range shards {
		if !sh.IsDir() {
			n++
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.contentDir(), sh.Name()))
		if err != nil {
			return 0, err
		}
		n += len(files)
	}
	return n, nil
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
// after an intake, a retry, a release or a transition to waiting. It is per process: a
// retry by another process (the CLI) shows in WakeCounter.
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

// OpenContent opens the item's stored bytes for reading. Bytes that are not there are
// ErrContentMissing, which also matches fs.ErrNotExist: the item cannot be uploaded,
// the caller quarantines it with that reason.
func (s *Spool) OpenContent(id string) (*os.File, error) {
	f, err := os.Open(s.ContentPath(id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("spool %s: content of item %s: %w", s.dir, id, ErrContentMissing)
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
	if s.w == nil {
		return fmt.Errorf("%s: %w", what, ErrReadOnly)
	}
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

func absDir(dir string) (string, error) { return filepath.Abs(dir) }
