package main

import (
	"fmt"
	"io"

	"github.com/edgecourier/courier/agent/config"
)

// cmdConfig: `courier config validate [--strict] FILE`. Errors and warnings are
// printed one per line, FILE: KEY: PROBLEM; exit 2 on an error (or, with
// --strict, on a warning), else 0.
func cmdConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "config: want validate [--strict] FILE")
	}
	switch args[0] {
	case "sign", "push", "fleet":
		return cmdConfigRemote(args, stdout, stderr)
	case "validate":
		return cmdConfigValidate(args[1:], stdout, stderr)
	}
	return usageErr(stderr, "config: unknown sub-command %q (want validate)", args[0])
}

func cmdConfigValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config validate", stderr)
	strict := fs.Bool("strict", false, "treat warnings as errors (exit 2)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(pos) != 1 {
		return usageErr(stderr, "config validate: want exactly one FILE")
	}
	file := pos[0]
	cfg, errs, warns := config.Check(file)
	for _, e := range errs {
		fmt.Fprintf(stderr, "courier: invalid config: %s\n", e)
	}
	for _, w := range warns {
		if *strict {
			fmt.Fprintf(stderr, "courier: invalid config (--strict): %s\n", w)
		} else {
			fmt.Fprintf(stderr, "courier: warning: %s\n", w)
		}
	}
	if len(errs) > 0 || (*strict && len(warns) > 0) {
		fmt.Fprintf(stderr, "%s: %d error(s), %d warning(s)\n", file, len(errs), len(warns))
		return 2
	}
	fmt.Fprintf(stdout, "%s: valid (agent %s, %d source(s), uploads to %s, digest %.12s)", file, cfg.Agent.ID, len(cfg.Sources), cfg.Upload.Endpoint, cfg.Digest())
	if len(warns) > 0 {
		fmt.Fprintf(stdout, ", %d warning(s)", len(warns))
	}
	fmt.Fprintln(stdout)
	return 0
}
