// Command courier is the edge agent: it watches folders and MQTT feeds, spools
// each file durably, uploads it with tus and announces it once the server has
// verified its SHA-256. Each sub-command lives in its own file; this one only
// dispatches. Exit status: 0 success, 1 runtime failure, 2 bad usage or config.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// commit and date are set at build time too (make: -X main.commit=… -X main.date=…).
var (
	commit = "unknown"
	date   = "unknown"
)

const usage = `courier — moves clinic files to central storage, verified, exactly once.

Usage:
  courier dev [--listen ADDR] [--dir DIR]      ingest + agent in one process (try it: drop a file into ./var/inbox)
  courier run --config FILE                    the agent (foreground; what the service runs)
  courier status --config FILE [--json]        counts per state, oldest waiting item, last errors
  courier spool ls --config FILE [--state S] [--json]
  courier spool show --config FILE ID
  courier spool retry --config FILE (ID... | --state quarantined)
  courier events replay --config FILE --since T [--until T]
  courier config validate FILE
  courier config sign --key PREFIX.key --version N --target agent:ID|group:G [--expires D] FILE > config.jws
  courier config push --broker URL config.jws   retained, to the topic its target names
  courier config fleet --broker URL [--json]    every agent's state, applied version, config digest
  courier keygen --out PREFIX                  ed25519 pair for signing configuration
  courier mllp send --to HOST:PORT FILE...     send HL7 over MLLP, print each ACK
  courier service install|uninstall|start|stop|status --config FILE
  courier spool show --config FILE [--json] ID   ID or a unique prefix of it
  courier spool export --config FILE ID DIR   copy the spooled bytes to DIR/ID (SHA-256 checked)
  courier spool retry --dry-run ...           print what would be queued again, change nothing
  courier events replay --dry-run ...         print the events that would be replayed
  courier completion bash|zsh|fish            shell completion script (source <(courier completion bash))
  courier version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type command func(args []string, stdout, stderr io.Writer) int

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]command{
		"dev":     cmdDev,
		"run":     cmdRun,
		"status":  cmdStatus,
		"spool":   cmdSpool,
		"events":  cmdEvents,
		"config":  cmdConfig,
		"service": cmdService,
		"version": cmdVersion,
		"keygen":  cmdKeygen,
		"mllp":    cmdMLLP,
		"audit":   cmdAudit,
	}
	cmds["completion"] = cmdCompletion
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "courier: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return c(args[1:], stdout, stderr)
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "courier %s (commit %s, built %s)\n", version, commit, date)
	return 0
}
