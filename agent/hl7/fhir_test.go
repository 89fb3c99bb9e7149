package hl7

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// roundTrip marshals v and decodes it generically, as a consumer would see it.
func roundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return out
}

func TestDocumentReference(t *testing.T) {
	body := oruMsg("20260815081500+0100", "MSG2", "C", "178")
	sum := sha1.Sum(body)
	m := mustParse(t, body)
	in := DocRefInput{
		FileID:      "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d",
		Location:    "https://ingest.example.org/files/0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d",
		ContentType: ContentType,
		Size:        int64(len(body)),
		SHA1Hex:     hex.EncodeToString(sum[:]),
		Corrects:    "0193b0c2-0000-7cc1-9f4e-2f6f1a2b3c4d",
		Date:        time.Date(2026, 11, 25, 20, 15, 3, 123e6, time.FixedZone("x", 3600)),
		HL7:         m.Data(testSalt),
	}
	got := roundTrip(t, checkDocRef("correction", DocumentReference(in)))
	want := roundTrip(t, map[string]any{
		"resourceType": "DocumentReference",
		"masterIdentifier": map[string]any{
			"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d",
		},
		"status":    "current",
		"docStatus": "amended",
		"category": []any{map[string]any{
			"coding": []any{map[string]any{"system": "urn:edgecourier:category", "code": "hl7v2-message"}},
			"text":   "HL7 v2 message",
		}},
		"identifier": []any{map[string]any{
			"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d",
		}},
		"type": map[string]any{
			"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0076", "code": "ORU"}},
			"text":   "ORU^R01",
		},
		"date": "2026-11-25T19:15:03.123Z",
		"subject": map[string]any{"identifier": map[string]any{
			"system": "urn:edgecourier:patient-id:hmac-sha256", "value": PatientHMAC(testSalt, "444333222"),
		}},
		"content": []any{map[string]any{"attachment": map[string]any{
			"contentType": "x-application/hl7-v2+er7",
			"url":         in.Location,
			"size":        len(body),
			"hash":        base64.StdEncoding.EncodeToString(sum[:]),
			"creation":    "2026-08-15T08:15:00+01:00",
		}}},
		"context": map[string]any{"related": []any{map[string]any{"identifier": map[string]any{
			"type": map[string]any{"coding": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "FILL", "display": "Filler Identifier",
			}}},
			"value": "LAB2233",
		}}}, "period": map[string]any{"start": "2026-08-13"}}, // OBR-7 without a zone: its date
		"relatesTo": []any{map[string]any{
			"code": "replaces",
			"target": map[string]any{"identifier": map[string]any{
				"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0193b0c2-0000-7cc1-9f4e-2f6f1a2b3c4d",
			}},
		}},
	})
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		w, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("DocumentReference\n got %s\nwant %s", g, w)
	}
	if b, _ := json.Marshal(got); strings.Contains(string(b), "444333222") || strings.Contains(string(b), "EVERYWOMAN") {
		t.Error("patient data in the DocumentReference")
	}
}

func TestDocumentReferenceMinimal(t *testing.T) {
	// No patient, no order, no correction, a status R4 has no code for, and a
	// size beyond R4's unsignedInt.
	got := roundTrip(t, checkDocRef("minimal", DocumentReference(DocRefInput{
		FileID: "id", Size: 3 << 30, SHA1Hex: "not hex",
		HL7: EnvelopeData{MessageType: "ADT^A01", ResultStatus: "X", SentAt: "garbage"},
	})))
	for _, k := range []string{"subject", "relatesTo", "context", "docStatus", "date"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s present: %v", k, got[k])
		}
	}
	att := got["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)
	if len(att) != 0 {
		t.Errorf("attachment %v, want empty (no size over 2^31-1, no bad hash, no bad creation)", att)
	}
	// A message type that is no table 0076 code keeps only the text.
	odd := roundTrip(t, checkDocRef("odd-type", DocumentReference(DocRefInput{FileID: "id", HL7: EnvelopeData{MessageType: "zz1^A"}})))
	if typ := odd["type"].(map[string]any); typ["coding"] != nil || typ["text"] != "zz1^A" {
		t.Errorf("type %v", typ)
	}
}

func TestDocStatus(t *testing.T) {
	for in, want := range map[string]string{
		"F": "final", "U": "final", "C": "amended", "P": "preliminary", "R": "preliminary",
		"S": "preliminary", "A": "preliminary", "W": "entered-in-error", "X": "", "": "", "D": "",
	} {
		if got := docStatus(in); got != want {
			t.Errorf("docStatus(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFHIRDateTime(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"2026", "2026", true},
		{"202608", "2026-08", true},
		{"20260815", "2026-08-15", true},
		{"20260815+0100", "2026-08-15", true},
		{"2026081508", "2026-08-15", true}, // time without zone: date only
		{"20260815081500", "2026-08-15", true},
		{"2026081508+0200", "2026-08-15T08:00:00+02:00", true},
		{"202608150815-0500", "2026-08-15T08:15:00-05:00", true},
		{"20260815081530+0000", "2026-08-15T08:15:30+00:00", true},
		{"20150624084727.655-0500", "2015-06-24T08:47:27.655-05:00", true},
		{"201203141259-0215", "2012-03-14T12:59:00-02:15", true},
		{"20261315", "", false},            // month 13
		{"20260815251000+0100", "", false}, // hour 25
		{"20260815081500+1500", "", false}, // zone beyond +14:00
		{"2026081508150", "", false},       // odd length
		{"20260815081500.12345+0100", "", false},
		{"202608150815.5+0100", "", false}, // fraction needs seconds
		{"20260815081500+01", "", false},
		{"", "", false},
		{"0000", "", false},
		{"abcd", "", false},
	}
	for _, tt := range tests {
		got, ok := FHIRDateTime(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("FHIRDateTime(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// Every corpus file's DocumentReference (and those of the bad inputs that
// parse) goes to the R4 schema check in TestMain.
func TestDocumentReferenceCorpus(t *testing.T) {
	n := 0
	for _, dir := range []string{"fhir-converter", "nhapi-bad-inputs"} {
		files := corpus(t, dir)
		for i, name := range sortedNames(files) {
			f, err := ParseFile(files[name])
			if err != nil {
				continue
			}
			sum := sha1.Sum(files[name])
			checkDocRef(dir+"-"+name, DocumentReference(DocRefInput{
				FileID: fmt.Sprintf("0193b0c2-7d1e-7cc1-9f4e-%012x", i), Location: "https://ingest.example.org/files/x",
				ContentType: ContentType, Size: int64(len(files[name])), SHA1Hex: hex.EncodeToString(sum[:]),
				Date: time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC), HL7: f.Envelope(testSalt).Data,
			}))
			n++
		}
	}
	if n < 139 {
		t.Errorf("%d DocumentReferences from the corpus, want at least the 139 good files", n)
	}
}
