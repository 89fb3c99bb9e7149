package agent

import (
	"encoding/json"

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
