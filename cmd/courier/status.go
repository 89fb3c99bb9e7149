package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/spool"
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
		return fail(stderr, "status: %v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return 0
	}
	fmt.Fprintf(stdout, "agent %s: %s", st.Agent, st.State)
	if st.Version != "" {
		fmt.Fprintf(stdout, " (version %s)", st.Version)
	}
	fmt.Fprintln(stdout)
	if st.Link != nil && st.Link.State != "" && st.Link.State != "up" {
		fmt.Fprintf(stdout, "uploads: %s since %s: %s\n", st.Link.State, st.Link.Since.Format(time.RFC3339), st.Link.LastError)
	}
	if st.MQTT != nil && !st.MQTT.Connected {
		fmt.Fprintf(stdout, "mqtt: not connected: %s\n", st.MQTT.LastError)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, s := range spool.AllStates {
		fmt.Fprintf(tw, "  %s\t%d\n", s, st.Counts[string(s)])
	}
	tw.Flush()
	fmt.Fprintf(stdout, "spooled bytes: %d\n", st.SpoolBytes)
	if st.OldestWaiting != nil {
		fmt.Fprintf(stdout, "oldest waiting item: received %s (%s ago)\n", st.OldestWaiting.Format(time.RFC3339), time.Since(*st.OldestWaiting).Round(time.Second))
	}
	if len(st.LastErrors) > 0 {
		fmt.Fprintln(stdout, "last errors:")
		for _, e := range st.LastErrors {
			fmt.Fprintf(stdout, "  %s  %s  %s: %s\n", e.At.Format(time.RFC3339), e.ID, e.State, e.Error)
		}
	}
	return 0
}
