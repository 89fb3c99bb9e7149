package spool

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The audit trail: one row per state change of an item, written in the transaction that
// makes the change, each row holding the SHA-256 of the row before it. Triggers refuse
// UPDATE and DELETE, except the retention sweep's removal of rows older than
// spool.keep_audit, which leaves the hash of the last removed row as the anchor. Anyone
// who can write the database file can still drop the triggers; what they cannot do is
// change, insert or remove a row inside the chain without VerifyAudit naming it.
// Removing rows from the end of the chain, or rewriting all of it, is not detectable
// from the database alone: export the trail (AuditRecords) somewhere else for that.

// DefaultKeepAudit is used when Options.KeepAudit is zero: two years.
const DefaultKeepAudit = 2 * 365 * 24 * time.Hour

// Actors recorded in the audit trail. A source is "source:<name>" (SourceActor); a
// remote configuration is whatever its applier passes to WithActor (e.g. "config:v42").
const (
	ActorUploader  = "uploader"
	ActorPublisher = "publisher"
	ActorCLI       = "cli"
	ActorRecovery  = "recovery"
)

// SourceActor is the actor of an intake by the source named name.
func SourceActor(name string) string { return "source:" + name }

type actorKey struct{}

// WithActor returns a context whose spool calls record actor in the audit trail instead
// of the method's default (Lease and Mark*: uploader; MarkPublished: publisher; Retry:
// cli; intake: the source). Use it for changes made on behalf of someone else, e.g. a
// retry ordered by remote configuration version 42: WithActor(ctx, "config:v42").
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

func actorOf(ctx context.Context, def string) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return def
}

// ErrAuditBroken: the audit chain does not verify (a row was changed, inserted or
// removed). The error is an *AuditError naming the first bad row.
var ErrAuditBroken = errors.New("audit trail broken")

// AuditError names the first row of the audit trail that does not verify.
type AuditError struct {
	Seq     int64
	Problem string
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("audit row %d: %s", e.Seq, e.Problem)
}

func (e *AuditError) Is(target error) bool { return target == ErrAuditBroken }

// AuditRecord is one row of the audit trail, as `courier audit export` writes it.
type AuditRecord struct {
	Seq      int64     `json:"seq"`
	ItemID   string    `json:"item_id"`
	From     State     `json:"from"` // "" when the item came into being
	To       State     `json:"to"`
	At       time.Time `json:"at"`
	SHA256   string    `json:"sha256"`
	Actor    string    `json:"actor"`
	PrevHash string    `json:"prev_hash"`
	Hash     string    `json:"hash"`
}

// auditHash is the SHA-256 of the row's canonical text. Every field is in it, prev_hash
// included, so changing any of them, or the order of rows, shows.
func auditHash(r *AuditRecord) string {
	h := sha256.New()
	for _, f := range []string{strconv.FormatInt(r.Seq, 10), r.ItemID, string(r.From), string(r.To),
		strconv.FormatInt(nanos(r.At), 10), r.SHA256, r.Actor, r.PrevHash} {
		h.Write([]byte(strconv.Itoa(len(f))))
		h.Write([]byte{':'})
		h.Write([]byte(f))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// auditLog appends rows within one transaction; it reads the chain's end once.
type auditLog struct {
	tx     *sql.Tx
	loaded bool
	seq    int64
	hash   string
}

func newAuditLog(tx *sql.Tx) *auditLog { return &auditLog{tx: tx} }

func (a *auditLog) add(ctx context.Context, id string, from, to State, at time.Time, digest, actor string) error {
	if !a.loaded {
		err := a.tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&a.seq, &a.hash)
		if errors.Is(err, sql.ErrNoRows) {
			err = a.tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_anchor WHERE id = 1`).Scan(&a.seq, &a.hash)
			if errors.Is(err, sql.ErrNoRows) {
				a.seq, a.hash, err = 0, "", nil
			}
		}
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		a.loaded = true
	}
	r := AuditRecord{Seq: a.seq + 1, ItemID: id, From: from, To: to, At: at.UTC(), SHA256: digest,
		Actor: actor, PrevHash: a.hash}
	r.Hash = auditHash(&r)
	_, err := a.tx.ExecContext(ctx, `INSERT INTO audit (seq, item_id, from_state, to_state, at, sha256,
		actor, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Seq, r.ItemID, string(r.From), string(r.To), nanos(r.At), r.SHA256, r.Actor, r.PrevHash, r.Hash)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	a.seq, a.hash = r.Seq, r.Hash
	return nil
}

// audit appends one row in tx.
func audit(ctx context.Context, tx *sql.Tx, id string, from, to State, at time.Time, digest, actor string) error {
	return newAuditLog(tx).add(ctx, id, from, to, at, digest, actor)
}

// auditItem appends a row for id, reading its digest in tx.
func auditItem(ctx context.Context, tx *sql.Tx, id string, from, to State, at time.Time, actor string) error {
	var digest string
	if err := tx.QueryRowContext(ctx, `SELECT sha256 FROM items WHERE id = ?`, id).Scan(&digest); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return audit(ctx, tx, id, from, to, at, digest, actor)
}

// AuditRecords calls fn for each audit row with since <= at < until (zero until: no
// upper bound), in chain order.
func (s *Spool) AuditRecords(ctx context.Context, since, until time.Time, fn func(AuditRecord) error) error {
	hi := int64(1<<63 - 1)
	if !until.IsZero() {
		hi = nanos(until)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT seq, item_id, from_state, to_state, at, sha256, actor,
		prev_hash, hash FROM audit WHERE at >= ? AND at < ? ORDER BY seq`, nanos(since), hi)
	if err != nil {
		return fmt.Errorf("spool %s: audit: %w", s.dir, err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return fmt.Errorf("spool %s: audit: %w", s.dir, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("spool %s: audit: %w", s.dir, err)
	}
	return nil
}

func scanAudit(sc scanner) (AuditRecord, error) {
	var (
		r        AuditRecord
		from, to string
		at       int64
	)
	err := sc.Scan(&r.Seq, &r.ItemID, &from, &to, &at, &r.SHA256, &r.Actor, &r.PrevHash, &r.Hash)
	r.From, r.To, r.At = State(from), State(to), fromNanos(at)
	return r, err
}

// VerifyAudit checks the whole chain: every row's hash matches its content and links
// to the row before (or to the retention anchor). It returns how many rows it checked;
// a broken chain is an *AuditError (errors.Is ErrAuditBroken) naming the first bad row.
func (s *Spool) VerifyAudit(ctx context.Context) (int, error) {
	var (
		prevSeq  int64
		prevHash string
	)
	err := s.r.QueryRowContext(ctx, `SELECT seq, hash FROM audit_anchor WHERE id = 1`).Scan(&prevSeq, &prevHash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("spool %s: audit anchor: %w", s.dir, err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT seq, item_id, from_state, to_state, at, sha256, actor,
		prev_hash, hash FROM audit ORDER BY seq`)
	if err != nil {
		return 0, fmt.Errorf("spool %s: audit: %w", s.dir, err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return n, fmt.Errorf("spool %s: audit: %w", s.dir, err)
		}
		switch {
		case r.Seq != prevSeq+1:
			return n, &AuditError{Seq: r.Seq, Problem: fmt.Sprintf("follows row %d: rows are missing", prevSeq)}
		case r.PrevHash != prevHash:
			return n, &AuditError{Seq: r.Seq, Problem: fmt.Sprintf("does not link to row %d (its prev_hash is not that row's hash)", prevSeq)}
		case auditHash(&r) != r.Hash:
			return n, &AuditError{Seq: r.Seq, Problem: "content does not match its hash (the row was changed)"}
		}
		prevSeq, prevHash = r.Seq, r.Hash
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("spool %s: audit: %w", s.dir, err)
	}
	return n, nil
}

// sweepAudit removes the rows older than keep_audit (a prefix of the chain) and keeps
// the last removed row's seq and hash as the anchor.
func (s *Spool) sweepAudit(ctx context.Context) (int64, error) {
	cutoff := nanos(s.nowUTC().Add(-s.opts.KeepAudit))
	var n int64
	err := s.write(ctx, "sweep audit", func(tx *sql.Tx) error {
		var lastSeq int64
		var lastHash string
		// The prefix of the chain older than the cut-off: walking seq order stops at the
		// first row young enough, so a sweep reads about as many rows as it removes.
		err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit WHERE at < ? AND seq < COALESCE(
			(SELECT seq FROM audit WHERE at >= ? ORDER BY seq LIMIT 1), 1 << 62) ORDER BY seq DESC LIMIT 1`,
			cutoff, cutoff).Scan(&lastSeq, &lastHash)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE totals SET value = MAX(value, ?) WHERE name = 'audit_cutoff'`, cutoff); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`, lastSeq, lastHash); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM audit WHERE seq <= ?`, lastSeq)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("spool %s: sweep audit: %w", s.dir, err)
	}
	return n, nil
}
