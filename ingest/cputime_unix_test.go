//go:build unix

package ingest

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process used so far: a
// benchmark measure that a machine busy with other work disturbs less than
// wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
