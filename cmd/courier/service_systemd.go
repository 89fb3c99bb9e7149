package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/edgecourier/courier/packaging"
)

// Unit files `courier service install` writes on a systemd machine, and the
// marker that tells uninstall the courier user was created by install.
const (
	systemdUnitDir     = "/etc/systemd/system"
	systemdUnitFile    = serviceName + ".service"
	systemdDropInDir   = serviceName + ".service.d"
	systemdDropInFile  = "courier-paths.conf"
	unitHeader         = "# Written by `courier service install`; `courier service uninstall` removes it.\n"
	unitUserCreated    = "# courier service install created the courier user.\n"
	dropInHeaderFormat = "# Written by `courier service install --config %s`: write access to the\n" +
		"# config's folders outside /var/lib/courier (the unit has ProtectSystem=strict).\n" +
		"# The courier user also needs file permission there (e.g. through a group).\n"
)

// renderUnit is the packaged unit with this binary and config file in place
// of /usr/bin/courier and /etc/courier/courier.yaml.
func renderUnit(exe, cfgFile string, userCreated bool) string {
	u := strings.NewReplacer(packaging.UnitBinary+" ", systemdQuote(exe)+" ", packaging.UnitConfig, systemdQuote(cfgFile)).Replace(packaging.CourierUnit)
	head := unitHeader
	if userCreated {
		head += unitUserCreated
	}
	return head + u
}

// renderDropIn gives the service write access to paths (none: no drop-in).
func renderDropIn(cfgFile string, paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, dropInHeaderFormat, cfgFile)
	b.WriteString("[Service]\n")
	for _, p := range paths {
		fmt.Fprintf(&b, "ReadWritePaths=%s\n", systemdQuote(p))
	}
	return b.String()
}

// systemdQuote quotes a path that has spaces, quotes or backslashes, as
// systemd's command-line and path-list parsers read it.
func systemdQuote(p string) string {
	if !strings.ContainsAny(p, " \t\"'\\") {
		return p
	}
	return strconv.Quote(p)
}
