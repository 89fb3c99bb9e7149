package main

import "os"

// reloadSignals: Windows has no SIGHUP; restart the service to apply a changed config.
func reloadSignals() []os.Signal { return nil }
