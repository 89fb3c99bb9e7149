package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"slices"
)

// Problem is one finding of Verify, about one item (ID "") for the database itself.
type Problem struct {
	ID      string `json:"id,omitempty"`
	Problem string `json:"problem"`
}

// VerifyReport is what Verify found. Verify never changes or deletes anything.
type VerifyReport struct {
	Database string    `json:"database"` // "ok", or why the database cannot be trusted
	Items    int       `json:"items"`    // rows holding content that were checked
	Files    int       `json:"files"`    // stored files (bytes) found in content/
	Problems []Problem `json:"problems"`
}

// OK is true when nothing is wrong.
func (r *VerifyReport) OK() bool { return r.Database == "ok" && len(r.Problems) == 0 }

// Verify is `courier spool verify`, an fsck: the database's integrity (PRAGMA
// integrity_check), every row that holds content has its bytes with its size and
// SHA-256 and a description, and every stored file is known to the database. It opens
// the spool read-only, so it runs beside an agent; an item the agent finishes or takes
// meanwhile is checked again before it is reported. A damaged or lost database is
// reported, and the stored files are then checked against their descriptions.
func Verify(ctx context.Context, dir string) (*VerifyReport, error) {
	rep := &VerifyReport{Database: "ok", Problems: []Problem{}}
	s, err := OpenReadOnly(ctx, dir)
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNeedsRecovery) {
		rep.Database = err.Error()
		return rep, verifyFilesOnly(ctx, dir, rep)
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	problems, err := pragmaCheck(ctx, s.r, "PRAGMA integrity_check(20)")
	if err != nil {
		rep.Database = err.Error()
	} else if len(problems) > 0 {
		rep.Database = fmt.Sprintf("integrity_check: %v", problems)
	}
	type row struct {
		size   int64
		digest string
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, size, sha256 FROM items WHERE stored = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("spool %s: verify: %w", s.dir, err)
	}
	stored := map[string]row{}
	var ids []string
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.size, &r.digest); err != nil {
			rows.Close()
			return nil, fmt.Errorf("spool %s: verify: %w", s.dir, err)
		}
		stored[id] = r
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("spool %s: verify: %w", s.dir, err)
	}
	// stillStored: the agent may have finished the item since the query.
	stillStored := func(id string) bool {
		var st int
		err := s.r.QueryRowContext(ctx, `SELECT stored FROM items WHERE id = ?`, id).Scan(&st)
		return err == nil && st == 1
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r := stored[id]
		rep.Items++
		size, sum, err := hashFile(s.ContentPath(id))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if stillStored(id) {
				rep.add(id, "content missing (the upload will fail and quarantine it)")
			}
			continue
		case err != nil:
			rep.add(id, "content unreadable: "+err.Error())
			continue
		case size != r.size || sum != r.digest:
			rep.add(id, fmt.Sprintf("content differs from its row: %d bytes, sha256 %s; row says %d bytes, sha256 %s",
				size, sum, r.size, r.digest))
		}
		sc, err := readSidecar(s.sidecarPath(id))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if stillStored(id) {
				rep.add(id, "no description (it could not be recovered if the database were lost)")
			}
		case err != nil:
			rep.add(id, "description unreadable: "+err.Error())
		case sc.ID != id || sc.SHA256 != r.digest || sc.Size != r.size:
			rep.add(id, "description does not match the row")
		}
	}
	files, err := s.scanContent()
	if err != nil {
		return nil, fmt.Errorf("spool %s: verify: %w", s.dir, err)
	}
	for _, id := range sortedIDs(files) {
		f := files[id]
		if f.content {
			rep.Files++
		}
		if _, ok := stored[id]; ok {
			continue
		}
		var st int
		err := s.r.QueryRowContext(ctx, `SELECT stored FROM items WHERE id = ?`, id).Scan(&st)
		switch {
		case errors.Is(err, sql.ErrNoRows) && f.content && f.sidecar:
			rep.add(id, "content not known to the database (kept; `"+RecoverCommand+"` takes it back)")
		case errors.Is(err, sql.ErrNoRows) && f.content:
			rep.add(id, "content without a row or a description (kept; a person must decide)")
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("spool %s: verify: %w", s.dir, err)
		}
		// A row that no longer holds bytes, or a lone description: leftovers the
		// agent removes at its next start, not a problem.
	}
	return rep, nil
}

// verifyFilesOnly checks stored files against their descriptions when the database
// cannot be read.
func verifyFilesOnly(ctx context.Context, dir string, rep *VerifyReport) error {
	s := &Spool{dir: dir}
	if abs, err := absDir(dir); err == nil {
		s.dir = abs
	}
	files, err := s.scanContent()
	if err != nil {
		return fmt.Errorf("spool %s: verify: %w", s.dir, err)
	}
	for _, id := range sortedIDs(files) {
		if err := ctx.Err(); err != nil {
			return err
		}
		f := files[id]
		if !f.content {
			continue
		}
		rep.Files++
		if !f.sidecar {
			rep.add(id, "content without a description (kept; a person must decide)")
			continue
		}
		sc, err := readSidecar(s.sidecarPath(id))
		if err != nil {
			rep.add(id, "description unreadable: "+err.Error())
			continue
		}
		size, sum, err := hashFile(s.ContentPath(id))
		if err != nil {
			rep.add(id, "content unreadable: "+err.Error())
			continue
		}
		if size != sc.Size || sum != sc.SHA256 {
			rep.add(id, fmt.Sprintf("content differs from its description: %d bytes, sha256 %s; described %d bytes, sha256 %s",
				size, sum, sc.Size, sc.SHA256))
		}
	}
	return nil
}

func (r *VerifyReport) add(id, problem string) {
	r.Problems = append(r.Problems, Problem{ID: id, Problem: problem})
}

func sortedIDs(files map[string]*contentFiles) []string {
	ids := make([]string, 0, len(files))
	for id := range files {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
