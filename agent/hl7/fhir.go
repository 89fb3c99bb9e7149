package hl7

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"time"

	"github.com/edgecourier/courier/spool"
)

// FHIR systems used in the DocumentReference.
const (
	// SystemMessageType is HL7 v2 table 0076 (message type) as a FHIR code system.
	SystemMessageType = "http://terminology.hl7.org/CodeSystem/v2-0076"
	// SystemIdentifierType is HL7 v2 table 0203 (identifier type); FILL = filler identifier.
	SystemIdentifierType = "http://terminology.hl7.org/CodeSystem/v2-0203"
	// SystemPatientHMAC names the pseudonymous patient identifiers Courier makes.
	SystemPatientHMAC = "urn:edgecourier:patient-hmac"
	// SystemURI is for identifiers that are URIs (the file id as urn:uuid).
	SystemURI = "urn:ietf:rfc:3986"
)

// maxUnsignedInt is the largest FHIR R4 unsignedInt (Attachment.size).
const maxUnsignedInt = 1<<31 - 1

// DocRefInput is what a DocumentReference is made from: the stored object and
// the message's envelope.
type DocRefInput struct {
	FileID      string // the item's id (a UUID)
	Location    string // URL of the verified object
	ContentType string
	Size        int64
	SHA1Hex     string    // hex SHA-1 of the bytes, as the spool keeps it
	Corrects    string    // id of the file this one corrects, "" if none
	Date        time.Time // when the reference is made: the item's verified_at
	HL7         EnvelopeData
}

// DocumentReference builds a FHIR R4 DocumentReference (JSON-ready) that points at
// the stored HL7 message. It carries no patient data: the subject is only the
// HMAC identifier, and only when the envelope has one.
//
// Mapping (R4 4.0.1 element names and cardinalities):
//   - status "current"; docStatus from the result status: F/U final, C amended,
//     P/R/S/A preliminary, W entered-in-error, else absent.
//   - type: MSH-9.1 coded in HL7 table 0076, text the full "ORU^R01".
//   - identifier: the file id as urn:uuid.
//   - date (instant): when the reference is made.
//   - subject: Reference.identifier {SystemPatientHMAC, hmac} only.
//   - content[0].attachment: contentType, url, size (omitted above the R4
//     unsignedInt range), hash (base64 SHA-1, as R4 requires), creation (MSH-7
//     as a FHIR dateTime when it converts). No title: file names may name patients.
//   - context.related: the filler order number (OBR-3) as an identifier of type FILL.
//   - relatesTo: [{code "replaces", target.identifier urn:uuid of the corrected file}].
func DocumentReference(in DocRefInput) map[string]any {
	doc := map[string]any{
		"resourceType": "DocumentReference",
		"status":       "current",
		"identifier":   []any{uuidIdentifier(in.FileID)},
	}
	if s := docStatus(in.HL7.ResultStatus); s != "" {
		doc["docStatus"] = s
	}
	if t := messageTypeConcept(in.HL7.MessageType); t != nil {
		doc["type"] = t
	}
	if !in.Date.IsZero() {
		doc["date"] = in.Date.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	if in.HL7.Patient != "" {
		doc["subject"] = map[string]any{
			"identifier": map[string]any{"system": SystemPatientHMAC, "value": in.HL7.Patient},
		}
	}

	att := map[string]any{}
	if in.ContentType != "" {
		att["contentType"] = in.ContentType
	}
	if in.Location != "" {
		att["url"] = in.Location
	}
	if in.Size >= 0 && in.Size <= maxUnsignedInt {
		att["size"] = in.Size
	}
	if sum, err := hex.DecodeString(in.SHA1Hex); err == nil && len(sum) == 20 {
		att["hash"] = base64.StdEncoding.EncodeToString(sum)
	}
	if c, ok := FHIRDateTime(in.HL7.SentAt); ok {
		att["creation"] = c
	}
	doc["content"] = []any{map[string]any{"attachment": att}}

	if in.HL7.FillerOrder != "" {
		doc["context"] = map[string]any{
			"related": []any{map[string]any{
				"identifier": map[string]any{
					"type": map[string]any{"coding": []any{map[string]any{
						"system": SystemIdentifierType, "code": "FILL", "display": "Filler Identifier",
					}}},
					"value": in.HL7.FillerOrder,
				},
			}},
		}
	}
	if in.Corrects != "" {
		doc["relatesTo"] = []any{map[string]any{
			"code":   "replaces",
			"target": map[string]any{"identifier": uuidIdentifier(in.Corrects)},
		}}
	}
	return doc
}

// DocRefFromItem builds the DocumentReference for a spool item whose envelope
// came from this package. ok is false when the item has no HL7 envelope.
func DocRefFromItem(item *spool.Item) (map[string]any, bool) {
	if item == nil || len(item.Envelope) == 0 {
		return nil, false
	}
	var env EnvelopeData
	if err := json.Unmarshal(item.Envelope, &env); err != nil || env.MessageType == "" {
		return nil, false
	}
	date := item.VerifiedAt
	if date.IsZero() {
		date = item.ReceivedAt
	}
	return DocumentReference(DocRefInput{
		FileID:      item.ID,
		Location:    item.Location,
		ContentType: item.ContentType,
		Size:        item.Size,
		SHA1Hex:     item.SHA1,
		Corrects:    item.Corrects,
		Date:        date,
		HL7:         env,
	}), true
}

func uuidIdentifier(id string) map[string]any {
	return map[string]any{"system": SystemURI, "value": "urn:uuid:" + id}
}

// docStatus maps an OBR-25 (table 0123) or OBX-11 (table 0085) status to R4's
// composition-status codes.
func docStatus(s string) string {
	switch s {
	case "F", "U":
		return "final"
	case "C":
		return "amended"
	case "P", "R", "S", "A":
		return "preliminary"
	case "W":
		return "entered-in-error"
	}
	return ""
}

var messageCode = regexp.MustCompile(`^[A-Z][A-Z0-9]{2}$`)

func messageTypeConcept(mt string) map[string]any {
	if mt == "" {
		return nil
	}
	c := map[string]any{"text": mt}
	code, _, _ := strings.Cut(mt, "^")
	if messageCode.MatchString(code) {
		c["coding"] = []any{map[string]any{"system": SystemMessageType, "code": code}}
	}
	return c
}

// fhirDateTime is R4's regular expression for dateTime.
var fhirDateTime = regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$`)

// FHIRDateTime converts an HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]) to a
// FHIR dateTime. FHIR wants a time zone with any time of day, so a time without
// an offset is cut back to its date. ok is false when dtm is not a DTM.
func FHIRDateTime(dtm string) (string, bool) {
	local, zone := dtm, ""
	if i := strings.IndexAny(dtm, "+-"); i >= 0 {
		local, zone = dtm[:i], dtm[i:]
	}
	frac := ""
	if i := strings.IndexByte(local, '.'); i >= 0 {
		local, frac = local[:i], local[i+1:]
		if len(local) != 14 || frac == "" || len(frac) > 4 || !digits(frac) {
			return "", false
		}
	}
	if !digits(local) || len(local)%2 != 0 || len(local) < 4 || len(local) > 14 {
		return "", false
	}
	var b strings.Builder
	b.WriteString(local[:4])
	if len(local) >= 6 {
		b.WriteString("-" + local[4:6])
	}
	if len(local) >= 8 {
		b.WriteString("-" + local[6:8])
	}
	if len(local) >= 10 && zone != "" {
		if len(zone) != 5 || !digits(zone[1:]) {
			return "", false
		}
		mm, ss := "00", "00"
		if len(local) >= 12 {
			mm = local[10:12]
		}
		if len(local) == 14 {
			ss = local[12:14]
		}
		b.WriteString("T" + local[8:10] + ":" + mm + ":" + ss)
		if frac != "" {
			b.WriteString("." + frac)
		}
		b.WriteString(zone[:3] + ":" + zone[3:])
	}
	s := b.String()
	if !fhirDateTime.MatchString(s) {
		return "", false
	}
	return s, true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
