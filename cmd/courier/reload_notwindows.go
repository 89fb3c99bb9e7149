//go:build !windows

package main

import (
	"os"
	"syscall"
)

// reloadSignals make `courier run` read its config file again (systemd's ExecReload).
func reloadSignals() []os.Signal { return []os.Signal{syscall.SIGHUP} }
