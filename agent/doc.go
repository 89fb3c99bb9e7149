// Package agent wires Courier's edge agent together: it opens the spool, starts
// the sources (agent/folder, agent/mqtt), the uploader and the event publisher,
// and owns every goroutine it starts until Run returns. It holds no queue state of
// its own: everything that must survive a crash lives in the spool.
package agent
