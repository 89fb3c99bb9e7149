package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHL7AttachmentDetached (issue 13.2): an ORU with a 5 MiB PDF in an OBX
// ED dropped in a folder gives two verified objects at a real courier-ingest:
// the message unchanged and the PDF byte for byte; their events name each
// other and the message's DocumentReference lists the part.
func TestHL7AttachmentDetached(t *testing.T) {
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url(), Chunk: "1MiB"})
	e.startAgent()

	pdf := append([]byte("%PDF-1.7\n"), randBytes(5<<20, 13)...)
	msg := []byte("MSH|^~\\&|LAB|ACME|||20260815081500||ORU^R01|DOC77|P|2.5.1\r" +
		"PID|1||444333222^^^ACME^MR||EVERYWOMAN^EVE\r" +
		"OBR|1||LAB2233|11502-2^Lab report^LN|||20260813071500+0100||||||||||||||||||F\r" +
		"OBX|1|ED|PDF^Report^L||^AP^PDF^Base64^" + base64.StdEncoding.EncodeToString(pdf) + "||||||F\r")
	writeFile(t, filepath.Join(e.inbox, "oru.hl7"), msg)

	got := e.waitVerified(2, 3*time.Minute)
	mev, ok := got[sum(msg)]
	if !ok {
		t.Fatalf("no verified event for the message; events: %d", len(got))
	}
	pev, ok := got[sum(pdf)]
	if !ok {
		t.Fatalf("no verified event for the PDF; events: %d", len(got))
	}
	if b := in.object(t, mev.Data.FileID); !bytes.Equal(b, msg) {
		t.Errorf("message at the store differs (%d vs %d bytes)", len(b), len(msg))
	}
	if b := in.object(t, pev.Data.FileID); !bytes.Equal(b, pdf) {
		t.Errorf("PDF at the store differs (%d vs %d bytes)", len(b), len(pdf))
	}
	if n := len(in.objects(t)); n != 2 {
		t.Errorf("store holds %d objects, want 2", n)
	}
	if pev.Data.ContentType != "application/pdf" || pev.Data.Size != int64(len(pdf)) {
		t.Errorf("part event: content_type %q size %d", pev.Data.ContentType, pev.Data.Size)
	}
	var md, pd struct {
		Attachments  []string `json:"attachments"`
		AttachmentOf string   `json:"attachment_of"`
	}
	var mraw, praw struct {
		Data json.RawMessage `json:"data"`
	}
	json.Unmarshal([]byte(mev.raw), &mraw)
	json.Unmarshal([]byte(pev.raw), &praw)
	if err := json.Unmarshal(mraw.Data, &md); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(praw.Data, &pd); err != nil {
		t.Fatal(err)
	}
	if len(md.Attachments) != 1 || md.Attachments[0] != pev.Data.FileID || md.AttachmentOf != "" {
		t.Errorf("message event: attachments %v attachment_of %q, want [%s]", md.Attachments, md.AttachmentOf, pev.Data.FileID)
	}
	if pd.AttachmentOf != mev.Data.FileID || len(pd.Attachments) != 0 {
		t.Errorf("part event: attachment_of %q attachments %v, want %s", pd.AttachmentOf, pd.Attachments, mev.Data.FileID)
	}
	if !strings.Contains(string(mev.Data.FHIR), pev.Data.FileID) {
		t.Errorf("message DocumentReference does not list the part: %s", mev.Data.FHIR)
	}
	if !strings.Contains(string(pev.Data.FHIR), mev.Data.FileID) || !strings.Contains(string(pev.Data.FHIR), "application/pdf") {
		t.Errorf("part DocumentReference does not relate to the message: %s", pev.Data.FHIR)
	}
	var ph map[string]any
	if err := json.Unmarshal(pev.Data.HL7, &ph); err != nil || ph["part"] == nil || ph["message_type"] != "ORU^R01" {
		t.Errorf("part data.hl7 %s: %v", pev.Data.HL7, err)
	}
	for _, ev := range e.readEvents() {
		if strings.Contains(ev.raw, "444333222") || strings.Contains(ev.raw, "EVERYWOMAN") {
			t.Errorf("event carries patient data: %s", ev.raw)
		}
	}
}
