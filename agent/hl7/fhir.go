package hl7

import (
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"strings"
	"time"
)

// FHIR systems used in the DocumentReference.
const (
	// SystemMessageType is HL7 v2 table 0076 (message type) as a FHIR code system.
	SystemMessageType = "http://terminology.hl7.org/CodeSystem/v2-0076"
	// SystemIdentifierType is HL7 v2 table 0203 (identifier type); FILL = filler identifier.
	SystemIdentifierType = "http://terminology.hl7.org/CodeSystem/v2-0203"
	// SystemServiceSection is HL7 v2 table 0074 (diagnostic service section, OBR-24).
	SystemServiceSection = "http://terminology.hl7.org/CodeSystem/v2-0074"
	// SystemPatientHMAC names the pseudonymous patient identifiers Courier
	// makes: hex HMAC-SHA256 of the id, keyed with the site's salt.
	SystemPatientHMAC = "urn:edgecourier:patient-id:hmac-sha256"
	// SystemCategory is Courier's own category: what kind of HL7 content this is.
	SystemCategory = "urn:edgecourier:category"
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
	// Parts are the attachments stored as items of their own: the message's
	// DocumentReference lists each as another content entry.
	Parts []PartRef
	// AttachmentOf is set for an attachment's own item: the message's file id.
	AttachmentOf string
}

// PartRef points at an attachment stored as an item of its own.
type PartRef struct {
	FileID      string
	Location    string // "" until it is verified: the urn:uuid stands in
	ContentType string
	Size        int64 // -1 when not known yet
}

// DocumentReference builds a FHIR R4 DocumentReference (JSON-ready) that points at
// the stored HL7 message (or one of its attachments). It carries no patient
// data: the subject is only the HMAC identifier, and only when the envelope
// has one; redacted values are HMACs already.
//
// Mapping (R4 4.0.1 element names and cardinalities):
//   - masterIdentifier and identifier: the file id as urn:uuid, so a FHIR
//     server's conditional create (If-None-Exist: identifier=…) is idempotent.
//   - status "current"; docStatus from the result status: F/U final, C amended,
//     P/R/S/A preliminary, W entered-in-error, else absent.
//   - type: MSH-9.1 coded in HL7 table 0076, text the full "ORU^R01".
//   - category: Courier's (hl7v2-message or hl7v2-attachment), and OBR-24 in
//     HL7 table 0074 when present.
//   - date (instant): when the reference is made.
//   - subject: Reference.identifier {SystemPatientHMAC, hmac} only.
//   - content[0].attachment: contentType, url, size (omitted above the R4
//     unsignedInt range), hash (base64 SHA-1, as R4 requires), creation (MSH-7
//     as a FHIR dateTime when it converts). No title: file names may name
//     patients. content[1…]: the attachments stored apart.
//   - context.related: the filler order number (OBR-3) as an identifier of
//     type FILL; context.period from OBR-7/OBR-8 (or OBX-14).
//   - relatesTo: "replaces" the corrected file; for an attachment, "transforms"
//     the message it was taken from.
func DocumentReference(in DocRefInput) map[string]any {
	doc := map[string]any{
		"resourceType":     "DocumentReference",
		"masterIdentifier": uuidIdentifier(in.FileID),
		"status":           "current",
		"identifier":       []any{uuidIdentifier(in.FileID)},
	}
	if s := docStatus(in.HL7.ResultStatus); s != "" {
		doc["docStatus"] = s
	}
	if t := messageTypeConcept(in.HL7.MessageType); t != nil {
		doc["type"] = t
	}
	doc["category"] = categories(in)
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
	content := []any{map[string]any{"attachment": att}}
	for _, p := range in.Parts {
		pa := map[string]any{"url": p.Location}
		if p.Location == "" {
			pa["url"] = "urn:uuid:" + p.FileID
		}
		if p.ContentType != "" {
			pa["contentType"] = p.ContentType
		}
		if p.Size >= 0 && p.Size <= maxUnsignedInt {
			pa["size"] = p.Size
		}
		content = append(content, map[string]any{"attachment": pa})
	}
	doc["content"] = content

	ctx := map[string]any{}
	if in.HL7.FillerOrder != "" {
		ctx["related"] = []any{map[string]any{
			"identifier": map[string]any{
				"type": map[string]any{"coding": []any{map[string]any{
					"system": SystemIdentifierType, "code": "FILL", "display": "Filler Identifier",
				}}},
				"value": in.HL7.FillerOrder,
			},
		}}
	}
	period := map[string]any{}
	if s, ok := FHIRDateTime(in.HL7.ObservedStart); ok {
		period["start"] = s
	}
	if e, ok := FHIRDateTime(in.HL7.ObservedEnd); ok {
		period["end"] = e
	}
	if len(period) > 0 {
		ctx["period"] = period
	}
	if len(ctx) > 0 {
		doc["context"] = ctx
	}
	var rel []any
	if in.Corrects != "" {
		rel = append(rel, map[string]any{
			"code":   "replaces",
			"target": map[string]any{"identifier": uuidIdentifier(in.Corrects)},
		})
	}
	if in.AttachmentOf != "" {
		rel = append(rel, map[string]any{
			"code":   "transforms",
			"target": map[string]any{"identifier": uuidIdentifier(in.AttachmentOf)},
		})
	}
	if rel != nil {
		doc["relatesTo"] = rel
	}
	return doc
}

var sectionCode = regexp.MustCompile(`^[A-Z]{1,5}$`)

func categories(in DocRefInput) []any {
	code, text := "hl7v2-message", "HL7 v2 message"
	if in.AttachmentOf != "" || in.HL7.Part != nil {
		code, text = "hl7v2-attachment", "Attachment of an HL7 v2 message"
	}
	cats := []any{map[string]any{
		"coding": []any{map[string]any{"system": SystemCategory, "code": code}},
		"text":   text,
	}}
	if sectionCode.MatchString(in.HL7.ServiceSection) {
		cats = append(cats, map[string]any{
			"coding": []any{map[string]any{"system": SystemServiceSection, "code": in.HL7.ServiceSection}},
		})
	}
	return cats
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
