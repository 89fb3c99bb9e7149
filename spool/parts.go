package spool

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// Parts: an item whose envelope says it carries parts (HL7 attachments: Base64
// documents above 64 KiB inside an OBX) gets each part stored as an item of its
// own, uploaded and verified like any file, while the item itself stays as it
// came.
//
// Durability: the message row and a parts_pending row are committed in one
// transaction; the parts are then received inside the same Receive call,
// before it returns, so a source releases its file (deletes it, acks the MQTT
// message, sends the MLLP ACK) only once message and parts are all spooled.
// Each part's row, its parts row (parent, index) and the parent's meta
// "attachments" list are one transaction. While parts_pending names a message,
// Lease skips it: the message is uploaded (and its verified event, which lists
// its parts, built) only once every part is spooled. After a crash between the
// message and its last part, Open re-derives the missing parts from the
// message's stored bytes; (parent, index) is unique, so a part is never stored
// twice. Should receiving a part fail (spool full), Receive returns the error
// (the source keeps its file); the retry is a duplicate of the stored message
// and finishes its parts before the duplicate is acknowledged.

// MetaAttachments is the message's meta key listing its parts' ids, comma
// separated, in part order.
const MetaAttachments = "attachments"

// MetaPartOf and MetaPartIndex are a part's meta keys naming its message and
// its index there; the spool sets them, and rebuilds the links from them when
// rows are taken back from the stored descriptions.
const (
	MetaPartOf    = "attachment_of"
	MetaPartIndex = "attachment_index"
)

// Part is one part of a received item, as its Splitter found it.
type Part struct {
	Index       int    // unique within the item
	ContentType string // "" = sniffed from the bytes
	// Data is the part's envelope data (its event's data.hl7).
	Data json.RawMessage
	Meta map[string]string
	// Open streams the part's bytes (decoded from the item's stored content).
	Open func() (io.ReadCloser, error)
}

// Splitter finds the parts of a received item from its stored bytes at path.
// It runs for items whose Envelope.Parts > 0, and again after a crash: it must
// give the same parts for the same bytes.
type Splitter func(path string, it *Item) ([]Part, error)

// Parts returns the ids of msg's parts, in part order.
func (s *Spool) Parts(ctx context.Context, id string) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT part_id FROM parts WHERE parent_id = ? ORDER BY idx`, id)
	if err != nil {
		return nil, fmt.Errorf("spool %s: parts of %s: %w", s.dir, id, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("spool %s: parts of %s: %w", s.dir, id, err)
		}
		ids = append(ids, p)
	}
	return ids, rows.Err()
}

// insertPending marks a message whose parts are still to be received.
func insertPending(ctx context.Context, tx *sql.Tx, id string, n int) error {
	_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO parts_pending (item_id, expected) VALUES (?, ?)`, id, n)
	if err != nil {
		return fmt.Errorf("parts pending: %w", err)
	}
	return nil
}

// pendingParts reports whether id still waits for parts.
func (s *Spool) pendingParts(ctx context.Context, id string) (bool, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM parts_pending WHERE item_id = ?`, id).Scan(&n)
	return n > 0, err
}

// srcErr marks an error of the part's reader (undecodable payload), as opposed
// to the spool's own (disk full, I/O).
type srcReader struct {
	r   io.Reader
	err error
}

func (r *srcReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// receiveParts stores the parts of msg that are not stored yet and clears its
// pending mark. A part whose bytes cannot be decoded is skipped (logged): the
// message, uploaded unchanged, still holds it.
func (s *Spool) receiveParts(ctx context.Context, msg *Item) error {
	if s.opts.Split == nil {
		return s.clearPending(ctx, msg.ID)
	}
	parts, err := s.opts.Split(s.ContentPath(msg.ID), msg)
	if err != nil {
		return fmt.Errorf("spool %s: parts of %s: %w", s.dir, msg.ID, err)
	}
	have := map[int]bool{}
	rows, err := s.r.QueryContext(ctx, `SELECT idx FROM parts WHERE parent_id = ?`, msg.ID)
	if err != nil {
		return fmt.Errorf("spool %s: parts of %s: %w", s.dir, msg.ID, err)
	}
	for rows.Next() {
		var k int
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return fmt.Errorf("spool %s: parts of %s: %w", s.dir, msg.ID, err)
		}
		have[k] = true
	}
	rows.Close()
	for _, p := range parts {
		if have[p.Index] {
			continue
		}
		if err := s.receivePart(ctx, msg, p); err != nil {
			return err
		}
	}
	if err := s.clearPending(ctx, msg.ID); err != nil {
		return err
	}
	s.signal()
	return nil
}

func (s *Spool) clearPending(ctx context.Context, id string) error {
	err := s.write(ctx, "parts done", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM parts_pending WHERE item_id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("spool %s: parts of %s done: %w", s.dir, id, err)
	}
	return nil
}

func (s *Spool) receivePart(ctx context.Context, msg *Item, p Part) error {
	rc, err := p.Open()
	if err != nil {
		return fmt.Errorf("spool %s: part %d of %s: %w", s.dir, p.Index, msg.ID, err)
	}
	defer rc.Close()
	allowed, err := s.checkRoom(ctx, 0)
	if err != nil {
		return fmt.Errorf("spool %s: part %d of %s: %w", s.dir, p.Index, msg.ID, err)
	}
	id, err := newID()
	if err != nil {
		return fmt.Errorf("spool %s: part %d of %s: %w", s.dir, p.Index, msg.ID, err)
	}
	src := &srcReader{r: rc}
	st, err := s.stageStream(ctx, id, 0, allowed, -1, src)
	if err != nil {
		if src.err != nil && ctx.Err() == nil {
			s.log.Warn("spool: part skipped, its bytes cannot be decoded (the message still holds them)",
				"id", msg.ID, "part", p.Index, "err", src.err)
			return nil
		}
		return fmt.Errorf("spool %s: part %d of %s: %w", s.dir, p.Index, msg.ID, err)
	}
	meta := map[string]string{}
	for k, v := range p.Meta {
		meta[k] = v
	}
	meta[MetaPartOf], meta[MetaPartIndex] = msg.ID, strconv.Itoa(p.Index)
	now := s.nowUTC()
	it := newItem(Intake{Source: msg.Source, SourceKind: msg.SourceKind, Priority: msg.Priority, Meta: meta}, id, now)
	it.Size, it.SHA256, it.SHA1 = st.size, st.sha256, st.sha1
	it.ContentType = p.ContentType
	if it.ContentType == "" {
		it.ContentType = mimetype.Detect(st.head).String()
	}
	it.State = StateReceived
	it.NextAttempt = now
	it.Envelope = p.Data
	shard, err := s.install(id, st, describe(it, "", &Envelope{Data: p.Data}, nil))
	if err != nil {
		return fmt.Errorf("spool %s: part %d of %s: %w", s.dir, p.Index, msg.ID, err)
	}
	// The renames into content/ are durable before the row (install leaves that to
	// its caller; intakes share it in group.go).
	if err := syncDir(shard); err != nil {
		if rerr := s.removeContent(id); rerr != nil {
			s.log.Error("spool: remove content of uncommitted part", "id", id, "err", rerr)
		}
		return fmt.Errorf("spool %s: part %d of %s: fsync content folder: %w", s.dir, p.Index, msg.ID, err)
	}
	err = s.write(ctx, "part", func(tx *sql.Tx) error {
		if err := insertItem(ctx, tx, it, true, nil); err != nil {
			return err
		}
		if err := audit(ctx, tx, id, "", StateReceived, now, it.SHA256, actorOf(ctx, SourceActor(msg.Source))); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO parts (parent_id, idx, part_id) VALUES (?, ?, ?)`,
			msg.ID, p.Index, id); err != nil {
			return fmt.Errorf("parts: %w", err)
		}
		return appendPart(ctx, tx, msg.ID, id)
	})
	if err != nil {
		if rerr := s.removeContent(id); rerr != nil {
			s.log.Error("spool: remove content of uncommitted part", "id", id, "err", rerr)
		}
		if dbFull(err) {
			err = fmt.Errorf("%w: %w", ErrFull, err)
		}
		return fmt.Errorf("spool %s: commit part %d of %s: %w", s.dir, p.Index, msg.ID, err)
	}
	s.log.Info("spool: received part", "id", id, "attachment_of", msg.ID, "part", p.Index,
		"sha256", it.SHA256, "size", it.Size, "content_type", it.ContentType)
	return nil
}

// recoverParts finishes the parts of messages a crash interrupted. A failure
// is logged and left for the next start (the message waits, nothing is lost).
func (s *Spool) recoverParts(ctx context.Context) error {
	rows, err := s.r.QueryContext(ctx, `SELECT item_id FROM parts_pending`)
	if err != nil {
		return fmt.Errorf("parts pending: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("parts pending: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		it, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) || err == nil && !storedState(it.State) {
			if err := s.clearPending(ctx, id); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := s.receiveParts(WithActor(ctx, ActorRecovery), it); err != nil {
			s.log.Error("spool: parts of a message not recovered yet; retried at the next start", "id", id, "err", err)
			continue
		}
		s.log.Info("spool: recovered the parts of a message", "id", id)
	}
	return nil
}

// storedState: the item's bytes are in the spool.
func storedState(st State) bool {
	switch st {
	case StateReceived, StateUploading, StateWaiting:
		return true
	}
	return false
}

// SplitAttachments parses MetaAttachments.
func SplitAttachments(meta map[string]string) []string {
	v := meta[MetaAttachments]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// metaOf reads an item's meta as it is now.
func (s *Spool) metaOf(ctx context.Context, id string) (map[string]string, error) {
	it, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return it.Meta, nil
}

// appendPart adds part to the message's meta list of parts.
func appendPart(ctx context.Context, tx *sql.Tx, parent, part string) error {
	_, err := tx.ExecContext(ctx, `UPDATE items SET meta = json_set(meta, '$.`+MetaAttachments+`',
		ltrim(coalesce(json_extract(meta, '$.`+MetaAttachments+`'), '') || ',' || ?, ',')) WHERE id = ?`, part, parent)
	if err != nil {
		return fmt.Errorf("link part %s to %s: %w", part, parent, err)
	}
	return nil
}

// relinkParts restores the parts rows (and the messages' lists) of parts whose
// rows were rebuilt from their descriptions. A link already there is kept.
func (s *Spool) relinkParts(ctx context.Context, parts []*Item) error {
	if len(parts) == 0 {
		return nil
	}
	slices.SortFunc(parts, func(a, b *Item) int {
		if c := strings.Compare(a.Meta[MetaPartOf], b.Meta[MetaPartOf]); c != 0 {
			return c
		}
		ai, _ := strconv.Atoi(a.Meta[MetaPartIndex])
		bi, _ := strconv.Atoi(b.Meta[MetaPartIndex])
		return ai - bi
	})
	err := s.write(ctx, "relink parts", func(tx *sql.Tx) error {
		for _, p := range parts {
			k, err := strconv.Atoi(p.Meta[MetaPartIndex])
			if err != nil {
				continue // not a part this spool made
			}
			res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO parts (parent_id, idx, part_id) VALUES (?, ?, ?)`,
				p.Meta[MetaPartOf], k, p.ID)
			if err != nil {
				return fmt.Errorf("parts: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				if err := appendPart(ctx, tx, p.Meta[MetaPartOf], p.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool %s: relink parts: %w", s.dir, err)
	}
	return nil
}
