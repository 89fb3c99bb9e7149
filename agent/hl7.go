package agent

import (
	"encoding/json"
	"io"
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
		Parts:        len(e.Attachments),
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
		Parts:        partRefs(item, env),
	}), true
}

// MetaAttachmentIndex is the part item's meta key holding the attachment's
// index in its message's file (hl7.Attachment.Index).
const MetaAttachmentIndex = "attachment_index"

// hl7Splitter is the spool's Splitter for HL7 files: each attachment (OBX
// ED/RP Base64 above 64 KiB) becomes a part, decoded and streamed from the
// spooled message (bounded memory), with meta attachment_of naming the
// message, its own data.hl7 (hl7.Envelope.PartData) and content type. The
// spool calls it inside the message's Receive, and again after a crash, so
// every source (folder, mqtt, mllp) gets it with no change (spool/parts.go).
func hl7Splitter(salt []byte, maxBytes int64) spool.Splitter {
	inspect := hl7.Inspector(salt, maxBytes)
	return func(path string, msg *spool.Item) ([]spool.Part, error) {
		env := inspect(path)
		if env == nil {
			return nil, nil
		}
		parts := make([]spool.Part, 0, len(env.Attachments))
		for k, a := range env.Attachments {
			var data []byte
			if d, ok := env.PartData(k); ok {
				data, _ = json.Marshal(d) // strings, numbers, bools: cannot fail
			}
			parts = append(parts, spool.Part{
				Index:       a.Index,
				ContentType: a.ContentType,
				Data:        data,
				Meta:        map[string]string{events.MetaAttachmentOf: msg.ID, MetaAttachmentIndex: strconv.Itoa(a.Index)},
				Open:        func() (io.ReadCloser, error) { return hl7.OpenAttachment(path, a) },
			})
		}
		return parts, nil
	}
}

// attachmentsOf is events.Options.Attachments: the message's part ids, which
// the spool keeps in its meta.
func attachmentsOf(it *spool.Item) []string {
	if it == nil {
		return nil
	}
	return spool.SplitAttachments(it.Meta)
}

// inspector reads HL7 v2 envelopes. It is always installed: sources with hl7: off
// set Intake.NoInspect, so a reload that turns hl7 on for a source needs no new spool.
func inspector(salt []byte) spool.Inspector {
	return hl7Inspector(salt, 16<<20)
}

func fhirDocRef(it *spool.Item) (any, bool) {
	return hl7DocRef(it)
}

// partRefs lists a message's parts for its DocumentReference (size and
// location are in the parts' own events).
func partRefs(it *spool.Item, env hl7.EnvelopeData) []hl7.PartRef {
	var refs []hl7.PartRef
	ids := spool.SplitAttachments(it.Meta)
	for i, id := range ids {
		ref := hl7.PartRef{FileID: id, Size: -1}
		if len(ids) == len(env.Embedded) { // a part skipped as undecodable breaks the pairing
			ref.ContentType = env.Embedded[i].ContentType
		}
		refs = append(refs, ref)
	}
	return refs
}
