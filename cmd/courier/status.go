package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/statuspage"
	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
)

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	cfgPath := fs.String("config", "", "config file")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	st, err := agent.ReadStatus(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(stderr, "courier: status: %v\n", err)
		return statusNotRunning
	}
	code = statusCode(st)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return code
	}
	fmt.Fprintf(stdout, "agent %s: %s", st.Agent, st.State)
	if st.Version != "" {
		fmt.Fprintf(stdout, " (version %s)", st.Version)
	}
	fmt.Fprintln(stdout)
	if st.Link != nil && st.Link.State != "" && st.Link.State != uploader.LinkUp {
		reason := st.Link.Reason
		if reason == "" {
			reason = st.Link.LastError
		}
		fmt.Fprintf(stdout, "upload link: %s since %s (%s ago): %s\n", st.Link.State, st.Link.Since.Format(time.RFC3339),
			time.Since(st.Link.Since).Round(time.Second), reason)
		if adv := statuspage.Advice(reason); adv != "" {
			fmt.Fprintf(stdout, "  what to do: %s\n", adv)
		}
	} else if st.Link != nil && st.Link.State == uploader.LinkUp {
		fmt.Fprintln(stdout, "upload link: up")
	}
	if st.MQTT != nil && !st.MQTT.Connected {
		fmt.Fprintf(stdout, "mqtt: not connected: %s\n", st.MQTT.LastError)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, s := range spool.AllStates {
		fmt.Fprintf(tw, "  %s\t%d\n", s, st.Counts[string(s)])
	}
	tw.Flush()
	if c := st.Config; c != nil {
		fmt.Fprintf(stdout, "config: %s, version %d, sha256 %s", c.Source, c.Version, c.ConfigSHA256)
		if c.State != "" && c.State != "applied" {
			fmt.Fprintf(stdout, " (last document %s: %s)", c.State, c.Error)
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintf(stdout, "spooled: %s (%d bytes)\n", human(st.SpoolBytes), st.SpoolBytes)
	if st.OldestWaiting != nil {
		fmt.Fprintf(stdout, "oldest waiting item: received %s (%s ago)\n", st.OldestWaiting.Format(time.RFC3339), time.Since(*st.OldestWaiting).Round(time.Second))
	}
	if len(st.LastErrors) > 0 {
		fmt.Fprintln(stdout, "last errors:")
		for _, e := range st.LastErrors {
			fmt.Fprintf(stdout, "  %s  %s  %s: %s\n", e.At.Format(time.RFC3339), e.ID, e.State, e.Error)
		}
	}
	if n := st.Counts[string(spool.StateQuarantined)]; n > 0 {
		fmt.Fprintf(stdout, "%d quarantined: see `courier spool ls --config %s --state quarantined`, then `courier spool retry --config %s ID`\n", n, cfg.File, cfg.File)
	}
	return code
}

// Exit codes of `courier status` a monitoring check can use.
const (
	statusOK         = 0 // running, link up, nothing quarantined
	statusDegraded   = 1 // running, but the link is down or paused, or items are quarantined
	statusNotRunning = 3 // the agent is not running (or never ran with this config)
)

func statusCode(st *agent.Status) int {
	switch {
	case st.State == "stopped" || st.State == "":
		return statusNotRunning
	case st.State == "paused", st.Link != nil && st.Link.State != "" && st.Link.State != uploader.LinkUp,
		st.Counts[string(spool.StateQuarantined)] > 0:
		return statusDegraded
	}
	return statusOK
}
