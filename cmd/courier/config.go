package main

import (
	"fmt"
	"io"

	"github.com/edgecourier/courier/agent/config"
)

func cmdConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "config: want validate FILE")
	}
	switch args[0] {
	case "sign", "push", "fleet":
		return cmdConfigRemote(args, stdout, stderr)
	case "validate":
		if len(args) != 2 {
			return usageErr(stderr, "config validate: want exactly one FILE")
		}
		cfg, err := config.Load(args[1])
		if err != nil {
			printConfigError(stderr, err)
			return 2
		}
		fmt.Fprintf(stdout, "%s: valid (agent %s, %d source(s), uploads to %s)\n", args[1], cfg.Agent.ID, len(cfg.Sources), cfg.Upload.Endpoint)
		return 0
	}
	return usageErr(stderr, "config: unknown sub-command %q (want validate)", args[0])
}
