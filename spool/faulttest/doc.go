// Package faulttest breaks the spool on purpose, with real processes and real disks:
// a child process queues files and is SIGKILLed, then the database is emptied,
// loses its WAL, is deleted or corrupted, or the disk fills up. Each test asserts
// what a user cares about: every queued file is still there, byte for byte, and the
// error says what to do. The tests are slow-ish (processes, tmpfs), so they live
// apart from the spool's unit tests; they have no code of their own.
package faulttest
