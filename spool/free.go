package spool

import "fmt"

// FreeDisk is the space available on the spool's filesystem, in bytes, as the
// status page, `courier status` and the metrics report it.
func (s *Spool) FreeDisk() (int64, error) {
	free, _, err := freeDisk(s.dir)
	if err != nil {
		return 0, fmt.Errorf("free disk of the spool directory: %w", err)
	}
	return free, nil
}
