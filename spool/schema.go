package spool

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// schemaVersion is stored in PRAGMA user_version; bump it with a migration step.
const schemaVersion = 3

var schema = []string{
	`CREATE TABLE IF NOT EXISTS items (
		id                TEXT PRIMARY KEY,
		source            TEXT NOT NULL,
		source_kind       TEXT NOT NULL DEFAULT '',
		source_ref        TEXT NOT NULL DEFAULT '',
		filename          TEXT NOT NULL DEFAULT '',
		size              INTEGER NOT NULL DEFAULT 0,
		sha256            TEXT NOT NULL DEFAULT '',
		sha1              TEXT NOT NULL DEFAULT '',
		content_type      TEXT NOT NULL DEFAULT '',
		priority          INTEGER NOT NULL DEFAULT 1,
		state             TEXT NOT NULL,
		stored            INTEGER NOT NULL DEFAULT 0, -- 1 while content/<id> holds the bytes
		attempts          INTEGER NOT NULL DEFAULT 0,
		tries             INTEGER NOT NULL DEFAULT 0,
		next_attempt      INTEGER NOT NULL DEFAULT 0, -- unix nanos, as are all times
		upload_url        TEXT NOT NULL DEFAULT '',
		location          TEXT NOT NULL DEFAULT '',
		lease_owner       TEXT NOT NULL DEFAULT '',
		lease_until       INTEGER NOT NULL DEFAULT 0,
		received_at       INTEGER NOT NULL,
		verified_at       INTEGER NOT NULL DEFAULT 0,
		updated_at        INTEGER NOT NULL,
		last_error        TEXT NOT NULL DEFAULT '',
		meta              TEXT NOT NULL DEFAULT '{}',
		envelope          BLOB,
		dedupe_key        TEXT NOT NULL DEFAULT '',
		content_key       TEXT NOT NULL DEFAULT '',
		order_key         TEXT NOT NULL DEFAULT '',
		duplicate_of      TEXT NOT NULL DEFAULT '',
		corrects          TEXT NOT NULL DEFAULT '',
		control_id_reused INTEGER NOT NULL DEFAULT 0,
		reason            TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX IF NOT EXISTS items_leasable ON items(priority, received_at, id)
		WHERE state IN ('received', 'waiting', 'uploading')`,
	`CREATE INDEX IF NOT EXISTS items_state ON items(state, received_at)`,
	`CREATE INDEX IF NOT EXISTS items_received ON items(received_at)`,
	`CREATE INDEX IF NOT EXISTS items_digest ON items(source, sha256)`,
	`CREATE INDEX IF NOT EXISTS items_dedupe ON items(dedupe_key) WHERE dedupe_key != ''`,
	`CREATE INDEX IF NOT EXISTS items_order ON items(order_key, received_at) WHERE order_key != ''`,
	`CREATE INDEX IF NOT EXISTS items_stored ON items(id) WHERE stored = 1`,
	`CREATE TABLE IF NOT EXISTS outbox (
		seq          INTEGER PRIMARY KEY AUTOINCREMENT,
		item_id      TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
		type         TEXT NOT NULL,
		sink         TEXT NOT NULL,
		created_at   INTEGER NOT NULL,
		published_at INTEGER NOT NULL DEFAULT 0,
		UNIQUE (item_id, type, sink)
	)`,
	`CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(sink, seq) WHERE published_at = 0`,
	`CREATE INDEX IF NOT EXISTS outbox_created ON outbox(created_at)`,
	`CREATE TABLE IF NOT EXISTS fingerprints (
		source     TEXT NOT NULL,
		fp         TEXT NOT NULL,
		item_id    TEXT NOT NULL, -- no cascade: a kept file outlives its item row (PruneFingerprints)
		created_at INTEGER NOT NULL,
		PRIMARY KEY (source, fp)
	)`,
	`CREATE INDEX IF NOT EXISTS fingerprints_item ON fingerprints(item_id)`,
}

// schemaV2 adds the running totals (spooled bytes, the wake counter, the audit
// cut-off) and the audit trail. Triggers keep stored_bytes in the transaction that
// changes a row, so intake never sums the table.
var schemaV2 = []string{
	`CREATE TABLE IF NOT EXISTS totals (
		name  TEXT PRIMARY KEY,
		value INTEGER NOT NULL
	)`,
	`INSERT OR IGNORE INTO totals (name, value) VALUES
		('stored_bytes', (SELECT COALESCE(SUM(size), 0) FROM items WHERE stored = 1)),
		('wake', 0),
		('audit_cutoff', 0)`,
	`CREATE TRIGGER IF NOT EXISTS items_bytes_insert AFTER INSERT ON items WHEN NEW.stored = 1
	BEGIN
		UPDATE totals SET value = value + NEW.size WHERE name = 'stored_bytes';
	END`,
	`CREATE TRIGGER IF NOT EXISTS items_bytes_update AFTER UPDATE OF stored, size ON items
		WHEN OLD.stored != NEW.stored OR OLD.size != NEW.size
	BEGIN
		UPDATE totals SET value = value - (CASE WHEN OLD.stored = 1 THEN OLD.size ELSE 0 END)
			+ (CASE WHEN NEW.stored = 1 THEN NEW.size ELSE 0 END) WHERE name = 'stored_bytes';
	END`,
	`CREATE TRIGGER IF NOT EXISTS items_bytes_delete AFTER DELETE ON items WHEN OLD.stored = 1
	BEGIN
		UPDATE totals SET value = value - OLD.size WHERE name = 'stored_bytes';
	END`,
	// One row per state change; hash = SHA-256 of the row's canonical text, which
	// includes prev_hash, the previous row's hash (see audit.go).
	`CREATE TABLE IF NOT EXISTS audit (
		seq        INTEGER PRIMARY KEY,
		item_id    TEXT NOT NULL,
		from_state TEXT NOT NULL,
		to_state   TEXT NOT NULL,
		at         INTEGER NOT NULL,
		sha256     TEXT NOT NULL,
		actor      TEXT NOT NULL,
		prev_hash  TEXT NOT NULL,
		hash       TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS audit_at ON audit(at)`,
	// What the retention sweep left: the seq and hash of the last row it removed, so
	// the first remaining row still links to something.
	`CREATE TABLE IF NOT EXISTS audit_anchor (
		id   INTEGER PRIMARY KEY CHECK (id = 1),
		seq  INTEGER NOT NULL,
		hash TEXT NOT NULL
	)`,
	`CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
	BEGIN
		SELECT RAISE(ABORT, 'audit rows are append-only');
	END`,
	// Only the retention sweep deletes, and only rows older than the cut-off it raised.
	`CREATE TRIGGER IF NOT EXISTS audit_keep BEFORE DELETE ON audit
		WHEN OLD.at >= (SELECT value FROM totals WHERE name = 'audit_cutoff')
	BEGIN
		SELECT RAISE(ABORT, 'audit rows are kept until spool.keep_audit has passed');
	END`,
}

// schemaV3 links a message to its parts (HL7 attachments stored as items of
// their own, parts.go): parts (one row per part, unique per parent and index)
// and parts_pending (messages whose parts are still to be received).
var schemaV3 = []string{
	`CREATE TABLE IF NOT EXISTS parts (
		parent_id TEXT NOT NULL,
		idx       INTEGER NOT NULL,
		part_id   TEXT NOT NULL,
		PRIMARY KEY (parent_id, idx)
	)`,
	`CREATE INDEX IF NOT EXISTS parts_part ON parts(part_id)`,
	`CREATE TABLE IF NOT EXISTS parts_pending (
		item_id  TEXT PRIMARY KEY,
		expected INTEGER NOT NULL
	)`,
}

// userVersion is the schema version the database file says it has (0: no schema).
func userVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v)
	return v, err
}

// migrate brings the schema up to schemaVersion. A database already there is not
// written to at all: a full disk must not stop the agent from starting.
func (s *Spool) migrate(ctx context.Context) error {
	v, err := userVersion(ctx, s.w)
	if err != nil {
		return err
	}
	if v > schemaVersion {
		return fmt.Errorf("database schema %d is newer than this courier (%d)", v, schemaVersion)
	}
	if v == schemaVersion {
		return nil
	}
	return s.write(ctx, "migrate", func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
			return err
		}
		if v == schemaVersion {
			return nil // another process migrated meanwhile
		}
		for _, q := range append(append(schema, schemaV2...), schemaV3...) {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion))
		return err
	})
}

// itemCols is the column list scanItem reads, in order.
const itemCols = `id, source, source_kind, source_ref, filename, size, sha256, sha1, content_type,
	priority, state, attempts, tries, next_attempt, upload_url, location, received_at,
	verified_at, updated_at, last_error, meta, envelope, duplicate_of, corrects,
	control_id_reused, reason, lease_owner, lease_until`

// itemColsI is itemCols qualified with the alias i, for joins.
const itemColsI = `i.id, i.source, i.source_kind, i.source_ref, i.filename, i.size, i.sha256, i.sha1,
	i.content_type, i.priority, i.state, i.attempts, i.tries, i.next_attempt, i.upload_url,
	i.location, i.received_at, i.verified_at, i.updated_at, i.last_error, i.meta, i.envelope,
	i.duplicate_of, i.corrects, i.control_id_reused, i.reason, i.lease_owner, i.lease_until`

type scanner interface{ Scan(dest ...any) error }

func scanItem(sc scanner, extra ...any) (*Item, error) {
	var (
		it                                              Item
		state, meta                                     string
		env                                             []byte
		next, received, verified, updated, reuse, lease int64
		prio                                            int
	)
	dest := []any{&it.ID, &it.Source, &it.SourceKind, &it.SourceRef, &it.Filename, &it.Size,
		&it.SHA256, &it.SHA1, &it.ContentType, &prio, &state, &it.Attempts, &it.Tries, &next,
		&it.UploadURL, &it.Location, &received, &verified, &updated, &it.LastError, &meta, &env,
		&it.DuplicateOf, &it.Corrects, &reuse, &it.Reason, &it.LeaseOwner, &lease}
	if err := sc.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	it.Priority = Priority(prio)
	it.State = State(state)
	it.NextAttempt = fromNanos(next)
	it.ReceivedAt = fromNanos(received)
	it.VerifiedAt = fromNanos(verified)
	it.UpdatedAt = fromNanos(updated)
	it.ControlIDReused = reuse != 0
	it.LeaseUntil = fromNanos(lease)
	if meta != "" && meta != "{}" && meta != "null" {
		if err := json.Unmarshal([]byte(meta), &it.Meta); err != nil {
			return nil, fmt.Errorf("item %s: meta: %w", it.ID, err)
		}
	}
	if len(env) > 0 {
		it.Envelope = json.RawMessage(env)
	}
	return &it, nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
