package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/edgecourier/courier/agent/events"
	"github.com/edgecourier/courier/agent/hl7"
	"github.com/edgecourier/courier/spool"
)

// The adapter between agent/hl7 (which knows HL7, not the queue) and the
// spool (which knows the queue, not HL7).

// hl7Inspector is the spool's inspector for HL7 v2 files.
func hl7Inspector(salt []byte, maxBytes int64) spool.Inspector {
	inspect := hl7.Inspector(salt, maxBytes)
	return func(path string) *spool.Envelope {
		return spoolEnvelope(inspect(path))
	}
}

// spoolEnvelope maps agent/hl7's envelope to the spool's; nil stays nil.
func spoolEnvelope(e *hl7.Envelope) *spool.Envelope {
	if e == nil {
		return nil
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		// Strings, numbers and bools only: cannot happen. Keys still count.
		data = nil
	}
	return &spool.Envelope{
		DedupeKey:    e.DedupeKey,
		ContentKey:   e.ContentKey,
		OrderKey:     e.OrderKey,
		IsCorrection: e.IsCorrection,
		ContentType:  e.ContentType,
		Data:         data,
	}
}

// hl7DocRef builds data.fhir, a FHIR R4 DocumentReference, for an item whose
// envelope came from agent/hl7. ok is false when the item has no HL7 envelope.
func hl7DocRef(item *spool.Item) (map[string]any, bool) {
	if item == nil || len(item.Envelope) == 0 {
		return nil, false
	}
	var env hl7.EnvelopeData
	if err := json.Unmarshal(item.Envelope, &env); err != nil || env.MessageType == "" {
		return nil, false
	}
	date := item.VerifiedAt
	if date.IsZero() {
		date = item.ReceivedAt
	}
	return hl7.DocumentReference(hl7.DocRefInput{
		FileID:       item.ID,
		Location:     item.Location,
		ContentType:  item.ContentType,
		Size:         item.Size,
		SHA1Hex:      item.SHA1,
		Corrects:     item.Corrects,
		Date:         date,
		HL7:          env,
		AttachmentOf: item.Meta[events.MetaAttachmentOf],
	}), true
}

// MetaAttachmentIndex is the part item's meta key holding the attachment's
// index in its message's file (hl7.Attachment.Index).
const MetaAttachmentIndex = "attachment_index"

// receiveAttachments stores each attachment (OBX ED/RP Base64 above 64 KiB) of
// a received HL7 item as an item of its own, decoded and streamed from the
// spooled message (bounded memory), with meta attachment_of naming the
// message. It is the call a source makes after spool.Receive returned a
// received HL7 item; the message itself is uploaded unchanged. Not wired yet:
// see docs/hl7.md ("Attachments") for what the spool still lacks (the
// message's list of parts, atomicity with the message's intake).
func receiveAttachments(ctx context.Context, sp *spool.Spool, msg *spool.Item, maxBytes int64) ([]*spool.Item, error) {
	if msg == nil || len(msg.Envelope) == 0 || msg.State != spool.StateReceived {
		return nil, nil
	}
	if maxBytes <= 0 {
		maxBytes = hl7.DefaultMaxBytes
	}
	path := sp.ContentPath(msg.ID)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("attachments of %s: %w", msg.ID, err)
	}
	file, err := hl7.ParseReader(f, maxBytes)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("attachments of %s: %w", msg.ID, err)
	}
	var parts []*spool.Item
	for _, a := range file.Attachments {
		rc, err := hl7.OpenAttachment(path, a)
		if err != nil {
			return parts, fmt.Errorf("attachments of %s: %w", msg.ID, err)
		}
		it, err := sp.Receive(ctx, spool.Intake{
			Source: msg.Source, SourceKind: msg.SourceKind, Priority: msg.Priority, NoInspect: true,
			Meta: map[string]string{events.MetaAttachmentOf: msg.ID, MetaAttachmentIndex: strconv.Itoa(a.Index)},
		}, rc)
		rc.Close()
		if err != nil {
			return parts, fmt.Errorf("attachment %d of %s: %w", a.Index, msg.ID, err)
		}
		parts = append(parts, it)
	}
	return parts, nil
}

// inspector reads HL7 v2 envelopes. It is always installed: sources with hl7: off
// set Intake.NoInspect, so a reload that turns hl7 on for a source needs no new spool.
func inspector(salt []byte) spool.Inspector {
	return hl7Inspector(salt, 16<<20)
}

func fhirDocRef(it *spool.Item) (any, bool) {
	return hl7DocRef(it)
}
