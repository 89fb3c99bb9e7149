// Package mllp is the agent's `kind: mllp` source: HL7 v2 over TCP with the
// Minimal Lower Layer Protocol (frames VT message FS CR), as lab systems and
// interface engines send it.
//
// What it owns:
//   - The listener: many messages per connection, one at a time (each stored and
//     answered before the next frame is read, so ACKs go out in order); an idle
//     timeout between frames and a per-frame timeout from start block to end
//     block (a slow or stalled sender cannot hold a connection); a bound on the
//     message size (max_message) and on open connections (more are closed at
//     once); bytes between frames are skipped and counted; allowed_peers (CIDRs);
//     optional TLS, mutual with a client CA.
//   - Acknowledgement after durability, never before: a message is acknowledged
//     only after spool.Receive returned it received (fsynced, row committed) or a
//     duplicate of an item that is. Original mode MSA|AA; enhanced mode (MSH-15
//     set) a commit CA as MSH-15 asks (Decide says exactly when). Not HL7, too
//     large, a peer outside allowed_peers: AR/CR with an ERR naming the reason in
//     our words; the first two are recorded as rejected items (rejected event).
//     Spool full or a storage error: AE/CE "send it again later"; nothing is
//     dropped. BuildACK builds the ACK per HL7 v2 chapter 2.
//   - Metrics (client_golang): messages by outcome, bytes, ACK codes, open and
//     refused connections, skipped bytes, why connections ended.
//   - Client, the small sender behind `courier mllp send`.
//
// Memory: a message is held in memory from its start block until it is stored,
// so the bound is max connections × max_message (64 × 16 MiB by default); a
// connection's buffer is dropped after a message larger than 1 MiB.
//
// What it must not do: acknowledge a message the spool does not hold; log or
// put into an ERR anything from a message (ids, sizes, digests and peer
// addresses only — a control id may be a patient's MRN); keep data of its own.
package mllp
