package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/spool"
)

func cmdSpool(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "spool: want ls, show, retry, verify or recover")
	}
	switch args[0] {
	case "verify":
		return spoolVerify(args[1:], stdout, stderr)
	case "recover":
		return spoolRecover(args[1:], stdout, stderr)
	case "ls":
		return spoolLs(args[1:], stdout, stderr)
	case "show":
		return spoolShow(args[1:], stdout, stderr)
	case "retry":
		return spoolRetry(args[1:], stdout, stderr)
	case "export":
		return spoolExport(args[1:], stdout, stderr)
	}
	return usageErr(stderr, "spool: unknown sub-command %q (want ls, show, retry, export, verify or recover)", args[0])
}

// openShared opens the config's spool beside a possibly running agent.
func openShared(cfg *config.Config) (*spool.Spool, error) {
	return spool.Open(context.Background(), spool.Options{Dir: cfg.Agent.DataDir, Shared: true})
}

func checkState(s string) error {
	if s == "" {
		return nil
	}
	for _, st := range spool.AllStates {
		if string(st) == s {
			return nil
		}
	}
	return fmt.Errorf("--state: unknown state %q (want one of %v)", s, spool.AllStates)
}

func spoolLs(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("spool ls", stderr)
	cfgPath := fs.String("config", "", "config file")
	state := fs.String("state", "", "only items in this state")
	limit := fs.Int("limit", 0, "at most this many (newest first)")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if err := checkState(*state); err != nil {
		return usageErr(stderr, "spool ls: %v", err)
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	sp, err := openShared(cfg)
	if err != nil {
		return fail(stderr, "spool ls: %v", err)
	}
	defer sp.Close()
	items, err := sp.List(context.Background(), spool.ListFilter{State: spool.State(*state), Limit: *limit})
	if err != nil {
		return fail(stderr, "spool ls: %v", err)
	}
	if *asJSON {
		out := make([]itemView, len(items))
		for i, it := range items {
			out[i] = view(it, cfg.Privacy.SendFilenames)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return 0
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSOURCE\tSIZE\tAGE\tATTEMPTS\tNEXT\tSHA256")
	for _, it := range items {
		src := it.Source
		if cfg.Privacy.SendFilenames && it.Filename != "" {
			src += "/" + filepath.Base(it.Filename)
		}
		next := "-"
		if it.State == spool.StateWaiting && !it.NextAttempt.IsZero() {
			next = "in " + humanAge(it.NextAttempt.Sub(now))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%.16s\n", it.ID, it.State, src, humanSize(it.Size), humanAge(now.Sub(it.ReceivedAt)), it.Attempts, next, it.SHA256)
	}
	tw.Flush()
	return 0
}

// itemView is an item as the CLI shows it: no file name unless privacy allows.
type itemView struct {
	ID              string            `json:"id"`
	State           spool.State       `json:"state"`
	Source          string            `json:"source"`
	SourceKind      string            `json:"source_kind"`
	Filename        string            `json:"filename,omitempty"`
	Size            int64             `json:"size"`
	SHA256          string            `json:"sha256"`
	ContentType     string            `json:"content_type"`
	Priority        string            `json:"priority"`
	Attempts        int               `json:"attempts"`
	Tries           int               `json:"tries"`
	NextAttempt     *time.Time        `json:"next_attempt,omitempty"`
	UploadURL       string            `json:"upload_url,omitempty"`
	Location        string            `json:"location,omitempty"`
	ReceivedAt      time.Time         `json:"received_at"`
	VerifiedAt      *time.Time        `json:"verified_at,omitempty"`
	UpdatedAt       time.Time         `json:"updated_at"`
	LastError       string            `json:"last_error,omitempty"`
	Reason          string            `json:"reason,omitempty"`
	DuplicateOf     string            `json:"duplicate_of,omitempty"`
	Corrects        string            `json:"corrects,omitempty"`
	ControlIDReused bool              `json:"control_id_reused,omitempty"`
	Meta            map[string]string `json:"meta,omitempty"`
	HL7             json.RawMessage   `json:"hl7,omitempty"`
}

func view(it *spool.Item, names bool) itemView {
	v := itemView{
		ID: it.ID, State: it.State, Source: it.Source, SourceKind: it.SourceKind, Size: it.Size,
		SHA256: it.SHA256, ContentType: it.ContentType, Priority: it.Priority.String(),
		Attempts: it.Attempts, Tries: it.Tries, UploadURL: it.UploadURL, Location: it.Location,
		ReceivedAt: it.ReceivedAt, UpdatedAt: it.UpdatedAt, LastError: it.LastError, Reason: it.Reason,
		DuplicateOf: it.DuplicateOf, Corrects: it.Corrects, ControlIDReused: it.ControlIDReused,
		Meta: it.Meta, HL7: it.Envelope,
	}
	if names {
		v.Filename = it.Filename
	}
	if !it.NextAttempt.IsZero() && it.State == spool.StateWaiting {
		t := it.NextAttempt
		v.NextAttempt = &t
	}
	if !it.VerifiedAt.IsZero() {
		t := it.VerifiedAt
		v.VerifiedAt = &t
	}
	return v
}

func spoolShow(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("spool show", stderr)
	cfgPath := fs.String("config", "", "config file")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	ids, err := parseInterspersed(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(ids) != 1 {
		return usageErr(stderr, "spool show: want exactly one item ID")
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	sp, err := openShared(cfg)
	if err != nil {
		return fail(stderr, "spool show: %v", err)
	}
	defer sp.Close()
	it, err := resolveItem(context.Background(), sp, ids[0])
	if err != nil {
		return resolveFailed(stderr, "spool show", ids[0], cfg.Agent.DataDir, err)
	}
	if !*asJSON {
		printItem(stdout, view(it, cfg.Privacy.SendFilenames), time.Now())
		return 0
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.Encode(view(it, cfg.Privacy.SendFilenames))
	return 0
}

func spoolRetry(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("spool retry", stderr)
	cfgPath := fs.String("config", "", "config file")
	state := fs.String("state", "", "retry every item in this state (quarantined or waiting)")
	dryRun := fs.Bool("dry-run", false, "print what would be queued again, change nothing")
	ids, err := parseInterspersed(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(ids) == 0 && *state == "" {
		return usageErr(stderr, "spool retry: give item IDs, or --state quarantined to retry all of them")
	}
	if len(ids) > 0 && *state != "" {
		return usageErr(stderr, "spool retry: give item IDs or --state, not both")
	}
	if *state != "" && *state != string(spool.StateQuarantined) && *state != string(spool.StateWaiting) {
		return usageErr(stderr, "spool retry: --state must be quarantined or waiting, got %q", *state)
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	sp, err := openShared(cfg)
	if err != nil {
		return fail(stderr, "spool retry: %v", err)
	}
	defer sp.Close()
	ctx := context.Background()
	if *dryRun {
		return retryDryRun(ctx, sp, cfg.Agent.DataDir, ids, spool.State(*state), stdout, stderr)
	}
	if *state != "" {
		n, err := sp.RetryState(ctx, spool.State(*state))
		if err != nil {
			return fail(stderr, "spool retry: %v", err)
		}
		fmt.Fprintf(stdout, "%d item(s) queued again\n", n)
		return 0
	}
	failed := 0
	for _, id := range ids {
		it, err := resolveItem(ctx, sp, id)
		if err != nil {
			if resolveFailed(stderr, "spool retry", id, cfg.Agent.DataDir, err) == 2 {
				return 2
			}
			failed++
			continue
		}
		id = it.ID
		if err := sp.Retry(ctx, id); err != nil {
			fmt.Fprintf(stderr, "courier: spool retry %s: %v\n", id, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s queued again\n", id)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// spoolVerify is the spool's fsck: it reports, per item, what does not hold, and
// changes nothing. Exit 1 when anything is wrong.
func spoolVerify(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("spool verify", stderr)
	cfgPath := fs.String("config", "", "config file")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	rep, err := spool.Verify(context.Background(), cfg.Agent.DataDir)
	if err != nil {
		return fail(stderr, "spool verify: %v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		fmt.Fprintf(stdout, "database: %s\n", rep.Database)
		fmt.Fprintf(stdout, "items with content: %d, stored files: %d, problems: %d\n", rep.Items, rep.Files, len(rep.Problems))
		for _, p := range rep.Problems {
			fmt.Fprintf(stdout, "  %s: %s\n", p.ID, p.Problem)
		}
	}
	if !rep.OK() {
		if !*asJSON {
			fmt.Fprintln(stdout, "nothing was changed or deleted")
		}
		return 1
	}
	return 0
}

// spoolRecover rebuilds rows from the stored files' descriptions (the agent must be
// stopped: it takes the spool's lock).
func spoolRecover(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("spool recover", stderr)
	cfgPath := fs.String("config", "", "config file")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	rep, err := spool.Recover(context.Background(), spool.Options{Dir: cfg.Agent.DataDir})
	if errors.Is(err, spool.ErrLocked) {
		return fail(stderr, "spool recover: %v: stop the agent first (courier service stop)", err)
	}
	if err != nil {
		return fail(stderr, "spool recover: %v", err)
	}
	if rep.MovedAside != "" {
		fmt.Fprintf(stdout, "the damaged database was moved to %s\n", rep.MovedAside)
	}
	fmt.Fprintf(stdout, "%d item(s) rebuilt from their descriptions and queued again, %d already known\n", rep.Recovered, rep.Known)
	for _, id := range rep.Mismatched {
		fmt.Fprintf(stdout, "  %s: bytes differ from their description: quarantined\n", id)
	}
	for _, id := range rep.Undescribed {
		fmt.Fprintf(stdout, "  %s: stored without a description: kept, not queued\n", id)
	}
	for _, id := range rep.Unreadable {
		fmt.Fprintf(stdout, "  %s: description unreadable: kept, not queued\n", id)
	}
	if len(rep.Mismatched)+len(rep.Undescribed)+len(rep.Unreadable) > 0 {
		fmt.Fprintf(stdout, "files are in %s; nothing was deleted\n", filepath.Join(cfg.Agent.DataDir, "content"))
	}
	return 0
}

func spoolExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("spool export", stderr)
	cfgPath := fs.String("config", "", "config file")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(pos) != 2 {
		return usageErr(stderr, "spool export: want an item ID and a directory (courier spool export --config FILE ID DIR)")
	}
	if st, err := os.Stat(pos[1]); err != nil || !st.IsDir() {
		return usageErr(stderr, "spool export: %s is not a directory: create it first", pos[1])
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	sp, err := openShared(cfg)
	if err != nil {
		return fail(stderr, "spool export: %v", err)
	}
	defer sp.Close()
	it, err := resolveItem(context.Background(), sp, pos[0])
	if err != nil {
		return resolveFailed(stderr, "spool export", pos[0], cfg.Agent.DataDir, err)
	}
	dst, err := exportItem(sp, it, pos[1])
	if err != nil {
		return fail(stderr, "spool export: %v", err)
	}
	fmt.Fprintln(stdout, dst)
	return 0
}

// retryDryRun says what spool retry would do and changes nothing.
func retryDryRun(ctx context.Context, sp *spool.Spool, dir string, ids []string, state spool.State, stdout, stderr io.Writer) int {
	if state != "" {
		items, err := sp.List(ctx, spool.ListFilter{State: state})
		if err != nil {
			return fail(stderr, "spool retry: %v", err)
		}
		for _, it := range items {
			fmt.Fprintf(stdout, "would queue again %s (%s)\n", it.ID, it.State)
		}
		fmt.Fprintf(stdout, "dry run: %d item(s) would be queued again; nothing was changed\n", len(items))
		return 0
	}
	failed, n := 0, 0
	for _, id := range ids {
		it, err := resolveItem(ctx, sp, id)
		if err != nil {
			if resolveFailed(stderr, "spool retry", id, dir, err) == 2 {
				return 2
			}
			failed++
			continue
		}
		if it.State != spool.StateQuarantined && it.State != spool.StateWaiting {
			fmt.Fprintf(stderr, "courier: spool retry %s: state %s: %v\n", it.ID, it.State, spool.ErrNotRetryable)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "would queue again %s (%s)\n", it.ID, it.State)
		n++
	}
	fmt.Fprintf(stdout, "dry run: %d item(s) would be queued again; nothing was changed\n", n)
	if failed > 0 {
		return 1
	}
	return 0
}
