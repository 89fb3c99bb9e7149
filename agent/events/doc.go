// Package events turns spool outbox rows into CloudEvents 1.0 (CONTRACT.md,
// "Events") and delivers them to sinks. It owns the event format and the
// publishing loop; it never reads file content and never puts raw patient
// identifiers or (unless privacy allows) file names into an event.
package events
