// Package hl7 reads the envelope of HL7 v2 files (ER7, "pipe and hat") so the
// spool can tell resends from new messages and corrections from originals, and
// so events can say what a file is. docs/hl7.md describes the rules.
//
// It owns:
//   - ParseFile / Parse: a tolerant, bounded reader of every message of a file
//     (single messages, FHS/BHS batches, messages one after another): MSH, and
//     the PID, MRG, OBR and OBX fields it needs, in MSH-18's character set. It
//     takes a BOM, CR/LF/CRLF segment ends, 4 or 5 encoding characters, escape
//     sequences and any amount of garbage without panicking, in time linear in
//     the input.
//   - The keys (CONTRACT.md "duplicate", "corrections"): DedupeKey from MSH-3,
//     MSH-4, MSH-10; ContentKey, the SHA-256 of the message without the
//     content of MSH-7; OrderKey from MSH-3, MSH-4, OBR-3; IsCorrection for
//     result status C; File.Envelope for a whole file, judging a batch's
//     messages one by one.
//   - Redaction: a published value that carries one of the message's patient
//     identifiers becomes its HMAC and is named in data.hl7.redacted.
//   - Attachments: large Base64 payloads (OBX ED, RP with inline data), found
//     while parsing and streamed by OpenAttachment with bounded memory.
//   - Inspector: file path → *Envelope (this package's type; package agent
//     maps it to the spool's).
//   - DocumentReference: the event's data.fhir, a FHIR R4 DocumentReference.
//
// What it must not do: know the spool, or let a patient identifier, name,
// birth date or observation value leave the process. Keys holding an
// identifier are hashed; the patient appears solely as an HMAC keyed with the
// site's salt (privacy.id_salt_file), and not at all without one.
// Message.PatientID is in memory for that HMAC and must never be logged. It
// never decides what happens to a file: a file that does not parse is still
// uploaded, just without an envelope.
package hl7
