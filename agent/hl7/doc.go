// Package hl7 reads the envelope of HL7 v2 messages (ER7, "pipe and hat") so the
// spool can tell resends from new messages and corrections from originals, and
// so events can say what a file is.
//
// It owns:
//   - Parse: a tolerant, bounded reader of MSH (plus the first PID, OBR and OBX
//     fields it needs). It takes a BOM, CR/LF/CRLF segment ends, 4 or 5
//     encoding characters, escape sequences, FHS/BHS batches (first message) and
//     any amount of garbage without panicking, in time linear in the input.
//   - The spool's keys (CONTRACT.md "duplicate", "corrections"): DedupeKey from
//     MSH-3, MSH-4, MSH-10; ContentKey, the SHA-256 of the message without the
//     content of MSH-7; OrderKey from MSH-3, MSH-4, OBR-3; IsCorrection for
//     result status C.
//   - Inspector, the spool.Inspector that turns a spooled file into a
//     spool.Envelope whose Data becomes the event's data.hl7.
//   - DocumentReference / DocRefFromItem: the event's data.fhir, a FHIR R4
//     DocumentReference pointing at the stored object.
//
// What it must not do: let a patient identifier, name, birth date or
// observation value leave the process. Keys hold sender, control and order
// ids only; the patient appears solely as an HMAC keyed with the site's salt
// (privacy.id_salt_file), and not at all without one. Message.PatientID is
// in memory for that HMAC and must never be logged. It never decides what
// happens to a file: a file that does not parse is still uploaded, just without
// an envelope.
package hl7
