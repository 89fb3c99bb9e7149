package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
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
// PDF becomes an item of its own inside the same Receive, byte for byte, and
// the events and DocumentReferences name each other.
func TestHL7ReceiveAttachments(t *testing.T) {
	ctx := context.Background()
	salt := []byte("salt")
	sp, err := spool.Open(ctx, spool.Options{Dir: t.TempDir(), Inspect: hl7Inspector(salt, 0), Split: hl7Splitter(salt, 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	msg, pdf := oruWithPDF(5 << 20)
	it, err := sp.Receive(ctx, spool.Intake{Source: "lab", SourceKind: "folder"}, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := sp.Parts(ctx, it.ID)
	if err != nil || len(ids) != 1 {
		t.Fatalf("parts %v, %v", ids, err)
	}
	p, err := sp.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(sp.ContentPath(p.ID))
	if err != nil || !bytes.Equal(stored, pdf) || p.ContentType != "application/pdf" || p.Meta[events.MetaAttachmentOf] != it.ID {
		t.Fatalf("part: %d bytes (equal %v), type %q, meta %v, %v", len(stored), bytes.Equal(stored, pdf), p.ContentType, p.Meta, err)
	}
	// The message is stored unchanged.
	if m, _ := os.ReadFile(sp.ContentPath(it.ID)); !bytes.Equal(m, msg) {
		t.Error("the message's bytes changed")
	}
	opts := events.Options{AgentID: "a", FHIR: fhirDocRef, Attachments: attachmentsOf}
	pev, _ := events.Build(p, spool.EventVerified, opts)
	if pev.Data.AttachmentOf != it.ID || pev.Data.FHIR == nil {
		t.Errorf("part event attachment_of %q, fhir %v", pev.Data.AttachmentOf, pev.Data.FHIR)
	}
	var ph map[string]any
	if err := json.Unmarshal(p.Envelope, &ph); err != nil || ph["part"] == nil || ph["message_type"] != "ORU^R01" {
		t.Errorf("part data.hl7 %s: %v", p.Envelope, err)
	}
	m, _ := sp.Get(ctx, it.ID)
	mev, _ := events.Build(m, spool.EventVerified, opts)
	if len(mev.Data.Attachments) != 1 || mev.Data.Attachments[0] != p.ID {
		t.Errorf("message event attachments %v, want [%s]", mev.Data.Attachments, p.ID)
	}
	doc, _ := json.Marshal(mev.Data.FHIR)
	if !strings.Contains(string(doc), "urn:uuid:"+p.ID) {
		t.Errorf("message DocumentReference does not list the part: %s", doc)
	}
	// A resend is a duplicate and has no parts of its own.
	dup, err := sp.Receive(ctx, spool.Intake{Source: "lab", SourceKind: "folder"}, bytes.NewReader(msg))
	if err != nil || dup.State != spool.StateDuplicate {
		t.Fatalf("resend: %v %v", dup, err)
	}
	if ids, _ := sp.Parts(ctx, dup.ID); len(ids) != 0 {
		t.Errorf("duplicate has parts %v", ids)
	}
}

// TestHL7PartsRecovery: the parts fail after the message is committed (as a
// crash would leave it): the message is held back from upload, and the next
// start re-derives its parts from the stored message, once.
func TestHL7PartsRecovery(t *testing.T) {
	ctx := context.Background()
	salt := []byte("salt")
	dir := t.TempDir()
	fail := func(path string, it *spool.Item) ([]spool.Part, error) {
		return nil, errors.New("simulated crash")
	}
	sp, err := spool.Open(ctx, spool.Options{Dir: dir, Inspect: hl7Inspector(salt, 0), Split: fail})
	if err != nil {
		t.Fatal(err)
	}
	msg, pdf := oruWithPDF(200 << 10)
	if _, err := sp.Receive(ctx, spool.Intake{Source: "lab", SourceKind: "folder"}, bytes.NewReader(msg)); err == nil {
		t.Fatal("Receive succeeded although its parts failed")
	}
	items, _ := sp.List(ctx, spool.ListFilter{})
	if len(items) != 1 {
		t.Fatalf("%d items, want the message alone", len(items))
	}
	msgID := items[0].ID
	if _, err := sp.Lease(ctx, "t", time.Minute); !errors.Is(err, spool.ErrEmpty) {
		t.Errorf("message with pending parts was leased: %v", err)
	}
	sp.Close()
	for range 2 { // the second start finds nothing left to do
		sp, err = spool.Open(ctx, spool.Options{Dir: dir, Inspect: hl7Inspector(salt, 0), Split: hl7Splitter(salt, 0)})
		if err != nil {
			t.Fatal(err)
		}
		ids, err := sp.Parts(ctx, msgID)
		if err != nil || len(ids) != 1 {
			t.Fatalf("parts after recovery %v, %v", ids, err)
		}
		if b, _ := os.ReadFile(sp.ContentPath(ids[0])); !bytes.Equal(b, pdf) {
			t.Error("recovered part differs from the PDF")
		}
		m, _ := sp.Get(ctx, msgID)
		if got := spool.SplitAttachments(m.Meta); len(got) != 1 || got[0] != ids[0] {
			t.Errorf("message meta attachments %v", got)
		}
		sp.Close()
	}
	sp, _ = spool.Open(ctx, spool.Options{Dir: dir})
	defer sp.Close()
	items, _ = sp.List(ctx, spool.ListFilter{})
	if len(items) != 2 {
		t.Errorf("%d items after two recoveries, want 2", len(items))
	}
	if it, err := sp.Lease(ctx, "t", time.Minute); err != nil {
		t.Errorf("nothing leasable after recovery: %v", err)
	} else if it == nil {
		t.Error("nil lease")
	}
}

// oruWithPDF is an ORU whose OBX carries a random n-byte "PDF" in Base64.
func oruWithPDF(n int) (msg, pdf []byte) {
	pdf = make([]byte, n)
	rand.Read(pdf)
	copy(pdf, "%PDF-1.7\n")
	msg = []byte("MSH|^~\\&|LAB|ACME|||20260815081500||ORU^R01|DOC1|P|2.5.1\r" +
		"PID|1||444333222^^^ACME^MR||EVERYWOMAN^EVE\r" +
		"OBX|1|ED|PDF^Report^L||^AP^PDF^Base64^" + base64.StdEncoding.EncodeToString(pdf) + "||||||F\r")
	return msg, pdf
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
