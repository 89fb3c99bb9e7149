package uploader

import "time"

// Defaults for zero Options fields, exported so the configuration (agent/config)
// documents and applies the same values.
const (
	DefaultConcurrency  = 4
	DefaultRetryInitial = time.Second
	DefaultRetryMax     = 5 * time.Minute
	DefaultMaxAttempts  = 30
)
