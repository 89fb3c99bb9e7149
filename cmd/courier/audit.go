package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgecourier/courier/spool"
)

// cmdAudit is `courier audit verify|export`: the spool's hash-chained trail of state
// changes, read without writing (beside a running agent, on a full disk).
func cmdAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "audit: want verify or export")
	}
	switch args[0] {
	case "verify":
		return auditVerify(args[1:], stdout, stderr)
	case "export":
		return auditExport(args[1:], stdout, stderr)
	}
	return usageErr(stderr, "audit: unknown sub-command %q (want verify or export)", args[0])
}

func auditVerify(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit verify", stderr)
	cfgPath := fs.String("config", "", "config file")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	ctx := context.Background()
	sp, err := spool.OpenReadOnly(ctx, cfg.Agent.DataDir)
	if err != nil {
		return fail(stderr, "audit verify: %v", err)
	}
	defer sp.Close()
	n, err := sp.VerifyAudit(ctx)
	var ae *spool.AuditError
	if errors.As(err, &ae) {
		fmt.Fprintf(stdout, "audit trail broken at row %d: %s (%d rows before it verified)\n", ae.Seq, ae.Problem, n)
		return 1
	}
	if err != nil {
		return fail(stderr, "audit verify: %v", err)
	}
	fmt.Fprintf(stdout, "audit trail intact: %d rows\n", n)
	return 0
}

func auditExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit export", stderr)
	cfgPath := fs.String("config", "", "config file")
	since := fs.String("since", "", "start of the window (RFC 3339, a date 2006-01-02, or a duration ago like 24h)")
	until := fs.String("until", "", "end of the window (default: no end)")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if *since == "" {
		return usageErr(stderr, "audit export: --since is required")
	}
	now := time.Now()
	from, err := parseWhen(*since, now)
	if err != nil {
		return usageErr(stderr, "audit export: --since: %v", err)
	}
	var to time.Time
	if *until != "" {
		if to, err = parseWhen(*until, now); err != nil {
			return usageErr(stderr, "audit export: --until: %v", err)
		}
		if !to.After(from) {
			return usageErr(stderr, "audit export: --until (%s) must be after --since (%s)", to.Format(time.RFC3339), from.Format(time.RFC3339))
		}
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	ctx := context.Background()
	sp, err := spool.OpenReadOnly(ctx, cfg.Agent.DataDir)
	if err != nil {
		return fail(stderr, "audit export: %v", err)
	}
	defer sp.Close()
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	err = sp.AuditRecords(ctx, from, to, func(r spool.AuditRecord) error { return enc.Encode(r) })
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return fail(stderr, "audit export: %v", err)
	}
	return 0
}
