package hl7

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
)

// charset turns a message's field values into UTF-8. The zero value passes
// bytes through (ASCII, UTF-8, or a character set Courier does not know).
type charset struct {
	enc encoding.Encoding // nil: UTF-8 or bytes as they are
	// guess1252: MSH-18 is empty or ASCII. A value that is not valid UTF-8
	// then almost always comes from a Windows PC: read it as Windows-1252.
	guess1252 bool
}

// lookupCharset maps MSH-18 (HL7 table 0211, plus the names Windows systems
// write) to a decoder. unknown is true when MSH-18 names something else: its
// values are read as bytes. A BOM means UTF-8 whatever MSH-18 is empty.
func lookupCharset(name string, hasBOM bool) (cs charset, unknown bool) {
	n := strings.ToUpper(strings.TrimSpace(name))
	n = strings.NewReplacer("_", " ", "-", " ").Replace(n)
	switch n {
	case "":
		if hasBOM {
			return charset{}, false
		}
		return charset{guess1252: true}, false
	case "ASCII", "US ASCII":
		return charset{guess1252: true}, false
	case "UNICODE UTF 8", "UTF 8", "UTF8":
		return charset{}, false
	case "8859/1", "ISO 8859 1", "LATIN1", "LATIN 1":
		return charset{enc: charmap.ISO8859_1}, false
	case "8859/2", "ISO 8859 2":
		return charset{enc: charmap.ISO8859_2}, false
	case "8859/3":
		return charset{enc: charmap.ISO8859_3}, false
	case "8859/4":
		return charset{enc: charmap.ISO8859_4}, false
	case "8859/5":
		return charset{enc: charmap.ISO8859_5}, false
	case "8859/6":
		return charset{enc: charmap.ISO8859_6}, false
	case "8859/7":
		return charset{enc: charmap.ISO8859_7}, false
	case "8859/8":
		return charset{enc: charmap.ISO8859_8}, false
	case "8859/9":
		return charset{enc: charmap.ISO8859_9}, false
	case "8859/15", "ISO 8859 15", "LATIN9", "LATIN 9":
		return charset{enc: charmap.ISO8859_15}, false
	case "WINDOWS 1252", "CP1252", "CP 1252", "WINDOWS1252", "1252":
		return charset{enc: charmap.Windows1252}, false
	}
	return charset{}, true
}

// decode returns s in UTF-8.
func (c charset) decode(s string) string {
	if !hasHighByte(s) {
		return s
	}
	enc := c.enc
	if enc == nil && c.guess1252 && !utf8.ValidString(s) {
		enc = charmap.Windows1252
	}
	if enc == nil {
		return s
	}
	out, err := enc.NewDecoder().String(s)
	if err != nil {
		// Single-byte charmaps decode every byte; cannot happen.
		return s
	}
	return out
}

func hasHighByte(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}
