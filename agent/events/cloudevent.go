package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/edgecourier/courier/spool"
)

// Options shape the event body.
type Options struct {
	AgentID       string
	SendFilenames bool
	// FHIR builds data.fhir for an item with an HL7 envelope; nil = no fhir part.
	FHIR func(it *spool.Item) (any, bool)
	// Attachments lists the file ids of the items stored from an item's
	// embedded attachments (data.attachments); nil = none are known.
	Attachments func(it *spool.Item) []string
}

// MetaAttachmentOf is the item meta key naming the file an attachment's own
// item was taken from; it becomes data.attachment_of.
const MetaAttachmentOf = "attachment_of"

// CloudEvent is the structured-mode JSON envelope.
type CloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            Data   `json:"data"`
}

// Data is the event's data member.
type Data struct {
	FileID      string            `json:"file_id"`
	SHA256      string            `json:"sha256,omitempty"`
	Size        int64             `json:"size"`
	ContentType string            `json:"content_type,omitempty"`
	Location    string            `json:"location,omitempty"`
	Source      DataSource        `json:"source"`
	Priority    string            `json:"priority"`
	Filename    string            `json:"filename,omitempty"`
	ReceivedAt  string            `json:"received_at,omitempty"`
	VerifiedAt  string            `json:"verified_at,omitempty"`
	Attempts    int               `json:"attempts"`
	Reason      string            `json:"reason,omitempty"`
	DuplicateOf string            `json:"duplicate_of,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	// Attachments: the file ids of this message's attachments, stored as
	// items of their own. AttachmentOf: for such an item, the message's file id.
	Attachments  []string        `json:"attachments,omitempty"`
	AttachmentOf string          `json:"attachment_of,omitempty"`
	HL7          json.RawMessage `json:"hl7,omitempty"`
	FHIR         any             `json:"fhir,omitempty"`
}

// DataSource names where the file came from.
type DataSource struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

// ID is the event id for an item and event type: stable across redeliveries.
func ID(itemID, eventType string) string {
	return itemID + "." + shortType(eventType)
}

func shortType(t string) string {
	s := strings.TrimPrefix(t, "org.edgecourier.file.")
	return strings.TrimSuffix(s, ".v1")
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// Build makes the CloudEvent for one item and event type. Its bytes depend only
// on the item's recorded state, so a redelivery carries the same id and body.
func Build(it *spool.Item, eventType string, o Options) (*CloudEvent, error) {
	if it == nil {
		return nil, fmt.Errorf("build event %s: no item", eventType)
	}
	at := it.UpdatedAt
	if eventType == spool.EventVerified && !it.VerifiedAt.IsZero() {
		at = it.VerifiedAt
	}
	if at.IsZero() {
		at = it.ReceivedAt
	}
	d := Data{
		FileID:      it.ID,
		SHA256:      it.SHA256,
		Size:        it.Size,
		ContentType: it.ContentType,
		Source:      DataSource{Name: it.Source, Kind: it.SourceKind},
		Priority:    it.Priority.String(),
		ReceivedAt:  stamp(it.ReceivedAt),
		Attempts:    it.Tries,
		Meta:        it.Meta,
	}
	if o.SendFilenames {
		d.Filename = it.Filename
	}
	d.AttachmentOf = it.Meta[MetaAttachmentOf]
	if o.Attachments != nil {
		d.Attachments = o.Attachments(it)
	}
	switch eventType {
	case spool.EventVerified:
		d.Location = it.Location
		d.VerifiedAt = stamp(it.VerifiedAt)
		if d.Attempts == 0 {
			d.Attempts = 1
		}
	case spool.EventQuarantined, spool.EventRejected:
		d.Reason = it.Reason
		if d.Reason == "" {
			d.Reason = it.LastError
		}
	case spool.EventDuplicate:
		d.DuplicateOf = it.DuplicateOf
	}
	if len(it.Envelope) > 0 {
		d.HL7 = withLinks(it)
		if o.FHIR != nil && eventType == spool.EventVerified {
			if f, ok := o.FHIR(it); ok {
				d.FHIR = f
			}
		}
	}
	return &CloudEvent{
		SpecVersion:     "1.0",
		ID:              ID(it.ID, eventType),
		Source:          "courier://" + o.AgentID,
		Type:            eventType,
		Subject:         it.ID,
		Time:            stamp(at),
		DataContentType: "application/json",
		Data:            d,
	}, nil
}

// withLinks adds the spool's view (corrects, control_id_reused) to the envelope JSON.
func withLinks(it *spool.Item) json.RawMessage {
	var m map[string]any
	if err := json.Unmarshal(it.Envelope, &m); err != nil || m == nil {
		m = map[string]any{}
	}
	if it.Corrects != "" {
		m["corrects"] = it.Corrects
	} else {
		m["corrects"] = nil
	}
	m["control_id_reused"] = it.ControlIDReused
	b, err := json.Marshal(m)
	if err != nil {
		return it.Envelope
	}
	return b
}

// Marshal builds and encodes the event.
func Marshal(it *spool.Item, eventType string, o Options) ([]byte, error) {
	ev, err := Build(it, eventType, o)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ev)
}
