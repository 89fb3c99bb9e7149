//go:build !linux && !windows

package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/edgecourier/courier/agent/config"
)

// newServiceManager: courier supports systemd and the Windows SCM only.
func newServiceManager() (serviceManager, error) {
	return nil, fmt.Errorf("%w on %s: courier supports systemd (Linux) and the Windows service control manager; run `courier run --config FILE` under the supervisor you use", errNoServiceManager, runtime.GOOS)
}

func isInteractive() bool { return true }

func runAsService(cfg *config.Config, stderr io.Writer) int {
	return fail(stderr, "service: not a Windows service")
}
