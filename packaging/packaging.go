// Package packaging holds what Courier's installers ship: the systemd units,
// the maintainer scripts, the example configs and the Windows MSI source, and
// (cmd/mkpkg) the program that builds the .deb, .rpm, .msi and .zip from them.
// The agent's `courier service install` writes the same unit as the packages
// (CourierUnit), so there is one unit to keep right.
package packaging

import _ "embed"

// CourierUnit is systemd/courier.service, the packaged unit of the agent.
//
//go:embed systemd/courier.service
var CourierUnit string

// Paths the packaged unit names; `courier service install` replaces them with
// the running binary and the --config file.
const (
	UnitBinary = "/usr/bin/courier"
	UnitConfig = "/etc/courier/courier.yaml"
)
