package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecourier/courier/agent/events"
	"github.com/edgecourier/courier/agent/hl7"
	"github.com/edgecourier/courier/spool"
)

// TestHL7ReceiveAttachments: a real spool takes an ORU with a 5 MiB PDF; the
// PDF becomes an item of its own, byte for byte, whose event names the message.
func TestHL7ReceiveAttachments(t *testing.T) {
	ctx := context.Background()
	sp, err := spool.Open(ctx, spool.Options{Dir: t.TempDir(), Inspect: hl7Inspector([]byte("salt"), 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	pdf := make([]byte, 5<<20)
	rand.Read(pdf)
	copy(pdf, "%PDF-1.7\n")
	msg := []byte("MSH|^~\\&|LAB|ACME|||20260815081500||ORU^R01|DOC1|P|2.5.1\r" +
		"PID|1||444333222^^^ACME^MR||EVERYWOMAN^EVE\r" +
		"OBX|1|ED|PDF^Report^L||^AP^PDF^Base64^" + base64.StdEncoding.EncodeToString(pdf) + "||||||F\r")
	it, err := sp.Receive(ctx, spool.Intake{Source: "lab", SourceKind: "folder"}, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	parts, err := receiveAttachments(ctx, sp, it, 0)
	if err != nil || len(parts) != 1 {
		t.Fatalf("parts %v, %v", parts, err)
	}
	p := parts[0]
	stored, err := os.ReadFile(sp.ContentPath(p.ID))
	if err != nil || !bytes.Equal(stored, pdf) || p.ContentType != "application/pdf" || p.Meta[events.MetaAttachmentOf] != it.ID {
		t.Fatalf("part: %d bytes (equal %v), type %q, meta %v, %v", len(stored), bytes.Equal(stored, pdf), p.ContentType, p.Meta, err)
	}
	// The message is stored unchanged.
	if m, _ := os.ReadFile(sp.ContentPath(it.ID)); !bytes.Equal(m, msg) {
		t.Error("the message's bytes changed")
	}
	ev, _ := events.Build(p, spool.EventVerified, events.Options{AgentID: "a"})
	if ev.Data.AttachmentOf != it.ID {
		t.Errorf("part event attachment_of %q", ev.Data.AttachmentOf)
	}
	// Not for a duplicate or a non-HL7 item.
	if ps, err := receiveAttachments(ctx, sp, &spool.Item{ID: "x", State: spool.StateDuplicate, Envelope: it.Envelope}, 0); ps != nil || err != nil {
		t.Errorf("duplicate: %v %v", ps, err)
	}
}

// hl7Test is an ORU with the MRN reused as MSH-10 and an embedded PDF.
func hl7Test(t *testing.T) []byte {
	pdf := make([]byte, 100<<10)
	rand.Read(pdf)
	copy(pdf, "%PDF-1.7\n")
	return []byte("MSH|^~\\&|LAB|ACME|||20260815081500||ORU^R01|MRN0042|P|2.5.1\r" +
		"PID|1||MRN0042^^^ACME^MR||EVERYWOMAN^EVE\r" +
		"OBR|1||LAB2233|11502-2^Lab report^LN|||20260813071500+0100||||||||||||||||||F\r" +
		"OBX|1|ED|PDF^Report^L||^AP^PDF^Base64^" + base64.StdEncoding.EncodeToString(pdf) + "||||||F\r")
}

// TestHL7Adapter: the spool's inspector and data.fhir go through agent/hl7's
// own types; the spool gets keys and JSON, the event a DocumentReference.
func TestHL7Adapter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "oru.hl7")
	if err := os.WriteFile(path, hl7Test(t), 0o600); err != nil {
		t.Fatal(err)
	}
	salt := []byte("salt")
	env := hl7Inspector(salt, 0)(path)
	if env == nil || env.ContentType != hl7.ContentType || env.DedupeKey == "" || len(env.ContentKey) != 64 {
		t.Fatalf("spool envelope %+v", env)
	}
	if strings.Contains(env.DedupeKey+string(env.Data), "MRN0042") {
		t.Error("the MRN reached the spool's keys or the event data")
	}
	var data hl7.EnvelopeData
	if err := json.Unmarshal(env.Data, &data); err != nil || data.Redacted == nil || len(data.Embedded) != 1 {
		t.Fatalf("data %s: %v", env.Data, err)
	}
	if hl7Inspector(salt, 0)(filepath.Join(dir, "missing")) != nil || spoolEnvelope(nil) != nil {
		t.Error("no file, no envelope")
	}

	verified := time.Date(2026, 11, 25, 20, 15, 3, 0, time.UTC)
	item := &spool.Item{
		ID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d", Location: "https://x/files/1", ContentType: env.ContentType,
		Size: 1000, SHA1: strings.Repeat("ab", 20), ReceivedAt: verified.Add(-time.Minute), VerifiedAt: verified,
		Envelope: env.Data, Filename: "EVERYWOMAN_EVE.hl7",
	}
	doc, ok := hl7DocRef(item)
	if !ok {
		t.Fatal("no DocumentReference for an HL7 item")
	}
	b, _ := json.Marshal(doc)
	if !bytes.Contains(b, []byte(`"masterIdentifier"`)) || bytes.Contains(b, []byte("EVERYWOMAN")) || bytes.Contains(b, []byte("MRN0042")) {
		t.Errorf("DocumentReference %s", b)
	}
	// An attachment's own item: meta attachment_of → relatesTo transforms,
	// and data.attachment_of in the event.
	part := *item
	part.ID, part.ContentType = "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4e", "application/pdf"
	part.Meta = map[string]string{events.MetaAttachmentOf: item.ID}
	pd, _ := hl7DocRef(&part)
	if rel, _ := json.Marshal(pd["relatesTo"]); !bytes.Contains(rel, []byte("transforms")) {
		t.Errorf("part relatesTo %s", rel)
	}
	ev, err := events.Build(&part, spool.EventVerified, events.Options{AgentID: "a", FHIR: func(it *spool.Item) (any, bool) { return hl7DocRef(it) }})
	if err != nil || ev.Data.AttachmentOf != item.ID || ev.Data.FHIR == nil {
		t.Errorf("part event: %+v, %v", ev, err)
	}
	for name, e := range map[string][]byte{"none": nil, "not JSON": []byte("{"), "not HL7": []byte(`{"x":1}`)} {
		item.Envelope = e
		if _, ok := hl7DocRef(item); ok {
			t.Errorf("%s: DocumentReference made", name)
		}
	}
	if _, ok := hl7DocRef(nil); ok {
		t.Error("nil item: DocumentReference made")
	}
}
