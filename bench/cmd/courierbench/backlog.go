//go:build !windows

package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"github.com/edgecourier/courier/spool"
)

// backlogTimes measures agent start-up (until /healthz answers) and `courier status`
// with b.o.backlog items waiting in the spool, as after a weekend outage. The backlog
// is one item received through the spool, then copied row by row in SQL with its
// content linked and its description rewritten: receiving 100,000 items one fsync at a
// time would take longer than the whole benchmark.
func (b *bench) backlogTimes(ctx context.Context) error {
	if b.o.backlog <= 0 {
		return nil
	}
	dir := filepath.Join(b.o.work, "backlog")
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	b.logf("making a spool with %d items", b.o.backlog)
	sp, err := spool.Open(ctx, spool.Options{Dir: data, Sinks: []string{"file"}})
	if err != nil {
		return err
	}
	it, err := sp.Receive(ctx, spool.Intake{Source: "inbox", SourceKind: "folder"}, bytes.NewReader(bytes.Repeat([]byte("x"), 4096)))
	if err != nil {
		sp.Close()
		return err
	}
	sp.Close()
	if err := cloneItems(ctx, data, it.ID, b.o.backlog-1); err != nil {
		return fmt.Errorf("clone items: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "courier.yaml")
	// The endpoint is a closed port: nothing uploads, the whole backlog stays.
	cfg := fmt.Sprintf(`agent: { id: bench, data_dir: %s }
upload: { endpoint: "http://127.0.0.1:1/files/" }
spool: { max_bytes: 100GiB, min_free_disk: 1GiB }
sources:
  - { name: inbox, kind: folder, path: %s, settle: 100ms, after: delete }
events: { file: %s/events.jsonl }
http: { listen: "127.0.0.1:%d" }
log: { level: warn, format: text }
`, data, dir, dir, port)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	var starts, statuses []float64
	for r := 0; r < b.o.rounds; r++ {
		t0 := time.Now()
		p, err := startProc(ctx, b.courier, "run", "--config", cfgPath)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), 2*time.Minute); err != nil {
			p.stop()
			return fmt.Errorf("courier run with a backlog: %v\n%s", err, tail(p.log.String()))
		}
		starts = append(starts, time.Since(t0).Seconds())
		t1 := time.Now()
		out := output(ctx, dir, b.courier, "status", "--config", cfgPath)
		statuses = append(statuses, time.Since(t1).Seconds())
		p.stop()
		total := 0
		for _, m := range countLine.FindAllStringSubmatch(out, -1) {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
		if total != b.o.backlog {
			return fmt.Errorf("%w: courier status does not show %d items:\n%s", errCheck, b.o.backlog, tail(out))
		}
		b.logf("backlog round %d: start-up %.2f s, status %.2f s", r+1, starts[r], statuses[r])
	}
	s, st := median(starts), median(statuses)
	b.results = append(b.results,
		result{Work: fmt.Sprintf("agent start-up (to /healthz) with %d items in the spool", b.o.backlog), Courier: fmt.Sprintf("%.2f s", s), Peer: "—",
			Ratio: s, RatioOf: "seconds", Goal: "≤ 1 s", Met: s <= 1, Rounds: starts},
		result{Work: fmt.Sprintf("`courier status` with %d items in the spool", b.o.backlog), Courier: fmt.Sprintf("%.2f s", st), Peer: "—",
			Ratio: st, RatioOf: "seconds", Goal: "(reported)", Met: true, Rounds: statuses})
	return nil
}

// cloneItems copies item id n times in the database, with content hard-linked and
// its description rewritten for each copy.
func cloneItems(ctx context.Context, data, id string, n int) error {
	content := filepath.Join(data, "content")
	path := func(id string) string { return filepath.Join(content, id[len(id)-2:], id) } // spool.ContentPath's shards
	side, err := os.ReadFile(path(id) + ".json")
	if err != nil {
		return err
	}
	body, err := os.ReadFile(path(id))
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "spool.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	var cols []string
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info('items')`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var c string
		rows.Scan(&c)
		cols = append(cols, c)
	}
	rows.Close()
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = c
		if c == "id" {
			sel[i] = "?"
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	stmt, err := tx.PrepareContext(ctx, fmt.Sprintf(`INSERT INTO items (%s) SELECT %s FROM items WHERE id = ?`, strings.Join(cols, ","), strings.Join(sel, ",")))
	if err != nil {
		tx.Rollback()
		return err
	}
	for i := 0; i < n; i++ {
		nid := fmt.Sprintf("%s%08x", id[:len(id)-8], i+1)
		if _, err := stmt.ExecContext(ctx, nid, id); err != nil {
			tx.Rollback()
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path(nid)), 0o700); err != nil {
			tx.Rollback()
			return err
		}
		if err := os.WriteFile(path(nid), body, 0o600); err != nil { // a copy: ext4 caps hard links at 65,000
			tx.Rollback()
			return err
		}
		if err := os.WriteFile(path(nid)+".json", bytes.ReplaceAll(side, []byte(id), []byte(nid)), 0o600); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// countLine is one state's line in `courier status`: "  received     99984".
var countLine = regexp.MustCompile(`(?m)^\s+[a-z]+\s+([0-9]+)$`)
