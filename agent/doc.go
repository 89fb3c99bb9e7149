// Package agent wires Courier's edge agent together: it opens the spool, starts
// the sources (agent/folder, agent/mqtt), the uploader and the event publisher,
// and owns every goroutine it starts until Run returns. It holds no queue state of
// its own: everything that must survive a crash lives in the spool.
//
// Agent.Apply is the one way a running agent takes a new configuration (SIGHUP in
// `courier run`, later remote configuration): it builds what changed, then swaps
// those parts inside the running process and reports the keys that need a restart.
//
// The agent is also where the parts meet: agent/hl7 is plugged into the spool here
// (hl7.go), and /metrics is served from a client_golang registry (metrics.go).
package agent
