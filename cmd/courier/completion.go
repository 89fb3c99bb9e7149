package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/edgecourier/courier/spool"
)

// Hand-written shell completion: sub-commands, their sub-commands and flags.
// Keep in step with usage in main.go.

const completionBash = `# bash completion for courier; load with: source <(courier completion bash)
_courier() {
    local cur prev words cword
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    local cmd="${COMP_WORDS[1]}" sub="${COMP_WORDS[2]}"
    case "$prev" in
        --config|--key|--out|--dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --state) COMPREPLY=($(compgen -W "@STATES@" -- "$cur")); return ;;
    esac
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "dev run status spool events config audit keygen mllp service completion version help" -- "$cur"))
        return
    fi
    if [ "$COMP_CWORD" -eq 2 ]; then
        case "$cmd" in
            spool) COMPREPLY=($(compgen -W "ls show retry export verify recover" -- "$cur")) ;;
            events) COMPREPLY=($(compgen -W "replay" -- "$cur")) ;;
            config) COMPREPLY=($(compgen -W "validate sign push fleet" -- "$cur")) ;;
            audit) COMPREPLY=($(compgen -W "verify export" -- "$cur")) ;;
            mllp) COMPREPLY=($(compgen -W "send" -- "$cur")) ;;
            service) COMPREPLY=($(compgen -W "install uninstall start stop status" -- "$cur")) ;;
            completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")) ;;
            dev) COMPREPLY=($(compgen -W "--listen --dir" -- "$cur")) ;;
            run|status) COMPREPLY=($(compgen -W "--config --json" -- "$cur")) ;;
            keygen) COMPREPLY=($(compgen -W "--out" -- "$cur")) ;;
        esac
        return
    fi
    local flags="--config"
    case "$cmd $sub" in
        "spool ls") flags="--config --state --limit --json" ;;
        "spool show") flags="--config --json" ;;
        "spool retry") flags="--config --state --dry-run" ;;
        "spool verify") flags="--config --json" ;;
        "events replay") flags="--config --since --until --dry-run" ;;
        "config sign") flags="--key --version --target --expires" ;;
        "config push"|"config fleet") flags="--broker --json" ;;
        "mllp send") flags="--to" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _courier courier
`

const completionZsh = `#compdef courier
# zsh completion for courier; load with: source <(courier completion zsh)
_courier() {
    local -a cmds
    cmds=(dev run status spool events config audit keygen mllp service completion version help)
    if (( CURRENT == 2 )); then
        compadd -a cmds
        return
    fi
    if (( CURRENT == 3 )); then
        case "$words[2]" in
            spool) compadd ls show retry export verify recover ;;
            events) compadd replay ;;
            config) compadd validate sign push fleet ;;
            audit) compadd verify export ;;
            mllp) compadd send ;;
            service) compadd install uninstall start stop status ;;
            completion) compadd bash zsh fish ;;
            dev) compadd -- --listen --dir ;;
            run|status) compadd -- --config --json ;;
            keygen) compadd -- --out ;;
        esac
        return
    fi
    case "$words[CURRENT-1]" in
        --config|--key|--out|--dir) _files; return ;;
        --state) compadd @STATES@; return ;;
    esac
    case "$words[2] $words[3]" in
        "spool ls") compadd -- --config --state --limit --json ;;
        "spool show"|"spool verify") compadd -- --config --json ;;
        "spool retry") compadd -- --config --state --dry-run ;;
        "events replay") compadd -- --config --since --until --dry-run ;;
        "config sign") compadd -- --key --version --target --expires ;;
        "config push"|"config fleet") compadd -- --broker --json ;;
        "mllp send") compadd -- --to; _files ;;
        *) compadd -- --config; _files ;;
    esac
}
compdef _courier courier
`

const completionFish = `# fish completion for courier; load with: courier completion fish | source
complete -c courier -f
complete -c courier -n __fish_use_subcommand -a 'dev run status spool events config audit keygen mllp service completion version help'
complete -c courier -n '__fish_seen_subcommand_from spool' -a 'ls show retry export verify recover'
complete -c courier -n '__fish_seen_subcommand_from events' -a replay
complete -c courier -n '__fish_seen_subcommand_from config' -a 'validate sign push fleet'
complete -c courier -n '__fish_seen_subcommand_from audit' -a 'verify export'
complete -c courier -n '__fish_seen_subcommand_from mllp' -a send
complete -c courier -n '__fish_seen_subcommand_from service' -a 'install uninstall start stop status'
complete -c courier -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'
complete -c courier -l config -r -F -d 'config file'
complete -c courier -l json -d 'print JSON for machines'
complete -c courier -l state -x -a '@STATES@' -d 'item state'
complete -c courier -l limit -x -d 'at most this many'
complete -c courier -l dry-run -d 'print what would be done, change nothing'
complete -c courier -l since -x -d 'start of the window'
complete -c courier -l until -x -d 'end of the window'
complete -c courier -l listen -x -d 'listen address'
complete -c courier -l dir -r -F -d 'directory'
complete -c courier -l out -r -F -d 'key file prefix'
complete -c courier -l key -r -F -d 'signing key'
complete -c courier -l broker -x -d 'MQTT broker URL'
complete -c courier -l to -x -d 'HOST:PORT'
`

func cmdCompletion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		return usageErr(stderr, "completion: want bash, zsh or fish")
	}
	scripts := map[string]string{"bash": completionBash, "zsh": completionZsh, "fish": completionFish}
	script, ok := scripts[args[0]]
	if !ok {
		return usageErr(stderr, "completion: unknown shell %q (want bash, zsh or fish)", args[0])
	}
	states := make([]string, len(spool.AllStates))
	for i, st := range spool.AllStates {
		states[i] = string(st)
	}
	fmt.Fprint(stdout, strings.ReplaceAll(script, "@STATES@", strings.Join(states, " ")))
	return 0
}
