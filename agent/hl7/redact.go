package hl7

import (
	"slices"
	"strings"
)

// minContained is the shortest identifier also looked for inside values:
// shorter ones ("14") occur in timestamps and counters by chance, so they are
// matched only as a whole value or component.
const minContained = 4

// identifiers are the patient identifiers of a file, lower-cased, for
// matching published values against them.
type identifiers []string

func (f *File) identifiers() identifiers {
	var ids identifiers
	for _, m := range f.Messages {
		for _, id := range m.ids {
			if l := strings.ToLower(id); !slices.Contains(ids, l) {
				ids = append(ids, l)
			}
		}
	}
	return ids
}

func messageIdentifiers(m *Message) identifiers {
	var ids identifiers
	for _, id := range m.ids {
		ids = append(ids, strings.ToLower(id))
	}
	return ids
}

// match reports whether v equals or contains a patient identifier: the whole
// value or one of its components (split on comp) equals one, or an identifier
// of at least minContained characters occurs inside it. Case is ignored:
// over-redacting costs a readable value, under-redacting leaks a patient.
func (ids identifiers) match(v string, comp byte) bool {
	if v == "" || len(ids) == 0 {
		return false
	}
	l := strings.ToLower(v)
	for _, id := range ids {
		if l == id || (len(id) >= minContained && strings.Contains(l, id)) {
			return true
		}
	}
	if comp == 0 || strings.IndexByte(l, comp) < 0 {
		return false
	}
	for part := range strings.SplitSeq(l, string(comp)) {
		if slices.Contains(ids, part) {
			return true
		}
	}
	return false
}

// redactor replaces published values that carry a patient identifier by their
// HMAC (privacy.id_salt_file's key, the one hl7.patient uses) and names them.
// Without a salt such a value is left out altogether, like the patient.
type redactor struct {
	salt     []byte
	ids      identifiers
	comp     byte
	redacted []string
}

func (r *redactor) value(name, v string) string {
	if !r.ids.match(v, r.comp) {
		return v
	}
	if !slices.Contains(r.redacted, name) {
		r.redacted = append(r.redacted, name)
	}
	return PatientHMAC(r.salt, v)
}
