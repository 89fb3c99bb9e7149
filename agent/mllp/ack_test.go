package mllp

import (
	"strings"
	"testing"
	"time"
)

// fieldsOf splits an ACK into "SEG-n" → raw value, numbering MSH as HL7 does
// (MSH-1 is the field separator, MSH-2 the encoding characters).
func fieldsOf(t *testing.T, ack []byte) map[string]string {
	t.Helper()
	s := string(ack)
	if !strings.HasSuffix(s, "\r") || strings.Contains(s, "\n") {
		t.Fatalf("segments must end with CR only: %q", s)
	}
	sep := s[3:4]
	out := map[string]string{}
	for _, seg := range strings.Split(strings.TrimSuffix(s, "\r"), "\r") {
		f := strings.Split(seg, sep)
		name := f[0]
		if _, dup := out[name]; dup {
			t.Fatalf("segment %s twice in %q", name, s)
		}
		out[name] = seg
		for i := 1; i < len(f); i++ {
			n := i
			if name == "MSH" {
				n = i + 1
			}
			out[name+"-"+itoa(n)] = f[i]
		}
		if name == "MSH" {
			out["MSH-1"] = sep
		}
	}
	return out
}

func itoa(n int) string { return strings.TrimLeft(string(rune('0'+n/10))+string(rune('0'+n%10)), "0") }

func TestACKFieldByField(t *testing.T) {
	now := time.Date(2026, 12, 8, 1, 2, 3, 456e6, time.FixedZone("", 3600))
	const id = "0193B0C27D1E12340001"
	tooBig := &Reason{errInternal, "message of 9 bytes exceeds max_message of 8 bytes; not stored"}
	notHL7 := &Reason{errSegmentSequence, "not an HL7 v2 message: the frame does not begin with a valid MSH segment; not stored"}
	full := &Reason{errInternal, "Courier's spool is full; not stored, send it again later"}
	cases := []struct {
		name    string
		msg     []byte // nil: no usable header
		outcome Outcome
		reason  *Reason
		code    string // "" = no ACK
		want    map[string]string
		absent  []string
	}{
		{name: "original mode accepted", msg: msg("CTRL1", "2.5.1", "", ""), outcome: Accepted, code: "AA",
			want: map[string]string{"MSH-1": "|", "MSH-2": `^~\&`, "MSH-3": "COURIER", "MSH-4": "CLINIC",
				"MSH-5": "LABAPP", "MSH-6": "LABFAC", "MSH-7": "20261208010203.456+0100", "MSH-8": "",
				"MSH-9": "ACK^R01^ACK", "MSH-10": id, "MSH-11": "P", "MSH-12": "2.5.1",
				"MSA-1": "AA", "MSA-2": "CTRL1"},
			absent: []string{"MSH-13", "MSH-15", "MSH-16", "MSA-3", "ERR"}},
		{name: "enhanced AL accepted: commit accept", msg: msg("C2", "2.5.1", "AL", "AL"), outcome: Accepted, code: "CA",
			want: map[string]string{"MSA-1": "CA", "MSA-2": "C2", "MSH-9": "ACK^R01^ACK"}, absent: []string{"ERR", "MSH-15"}},
		{name: "enhanced AL refused: commit reject with ERR", msg: msg("C3", "2.5.1", "AL", "NE"), outcome: Refused, reason: notHL7, code: "CR",
			want: map[string]string{"MSA-1": "CR", "MSA-2": "C3", "MSA-3": notHL7.Text,
				"ERR-1": "", "ERR-2": "", "ERR-3": "100^Segment sequence error^HL70357", "ERR-4": "E",
				"ERR-5": "", "ERR-6": "", "ERR-7": "", "ERR-8": notHL7.Text}},
		{name: "enhanced AL spool full: commit error", msg: msg("C4", "2.5.1", "AL", "AL"), outcome: TryLater, reason: full, code: "CE",
			want: map[string]string{"MSA-1": "CE", "ERR-3": "207^Application internal error^HL70357", "ERR-8": full.Text}},
		{name: "ER accepted, MSH-16 AL: application accept so the sender is not left waiting", msg: msg("C5", "2.5.1", "ER", "AL"),
			outcome: Accepted, code: "AA", want: map[string]string{"MSA-1": "AA", "MSA-2": "C5"}},
		{name: "ER accepted, MSH-16 NE: no ACK", msg: msg("C6", "2.5.1", "ER", "NE"), outcome: Accepted},
		{name: "ER spool full: commit error", msg: msg("C7", "2.5.1", "ER", "NE"), outcome: TryLater, reason: full, code: "CE",
			want: map[string]string{"MSA-1": "CE"}},
		{name: "SU accepted: commit accept", msg: msg("C8", "2.5.1", "SU", ""), outcome: Accepted, code: "CA"},
		{name: "SU refused, MSH-16 AL: application reject", msg: msg("C9", "2.5.1", "SU", "AL"), outcome: Refused, reason: tooBig, code: "AR",
			want: map[string]string{"MSA-1": "AR", "ERR-3": "207^Application internal error^HL70357"}},
		{name: "SU spool full, MSH-16 empty: none (held and retried)", msg: msg("C10", "2.5.1", "SU", ""), outcome: TryLater, reason: full},
		{name: "NE accepted, MSH-16 AL (v2.8 corpus feeds): application accept", msg: msg("C11", "2.8", "NE", "AL"), outcome: Accepted, code: "AA",
			want: map[string]string{"MSA-1": "AA", "MSH-12": "2.8"}},
		{name: "NE/NE accepted: no ACK", msg: msg("C12", "2.8", "NE", "NE"), outcome: Accepted},
		{name: "NE/NE refused: no ACK", msg: msg("C13", "2.8", "NE", "NE"), outcome: Refused, reason: tooBig},
		{name: "unknown MSH-15 is read as AL", msg: msg("C14", "2.5.1", "XX", ""), outcome: Accepted, code: "CA"},
		{name: "v2.8 error: no MSA-3 (withdrawn in 2.7), ERR-3/4/8", msg: msg("C15", "2.8", "", ""), outcome: TryLater, reason: full, code: "AE",
			want:   map[string]string{"MSA-1": "AE", "MSA-2": "C15", "ERR-3": "207^Application internal error^HL70357", "ERR-4": "E", "ERR-8": full.Text},
			absent: []string{"MSA-3"}},
		{name: "v2.3: ACK^trigger without structure, ERR-1 location and code, MSA-3 text", msg: msg("C16", "2.3", "", ""),
			outcome: Refused, reason: tooBig, code: "AR",
			want: map[string]string{"MSH-9": "ACK^R01", "MSH-12": "2.3", "MSA-1": "AR", "MSA-3": tooBig.Text,
				"ERR-1": "^^^207&Application internal error&HL70357"},
			absent: []string{"ERR-2", "ERR-3"}},
		{name: "v2.3.1 has the structure component", msg: msg("C17", "2.3.1", "", ""), outcome: Accepted, code: "AA",
			want: map[string]string{"MSH-9": "ACK^R01^ACK"}},
		{name: "message's own delimiters are used", msg: []byte("MSH#$%*@#APP$1.2$ISO#FAC#RCV#RFAC#20260101##ORU$R01$ORU_R01#X#T$A#2.5.1\rPID#1\r"),
			outcome: TryLater, reason: &Reason{errInternal, "a#b$c%d*e@f"}, code: "AE",
			want: map[string]string{"MSH-1": "#", "MSH-2": "$%*@", "MSH-3": "RCV", "MSH-4": "RFAC", "MSH-5": "APP$1.2$ISO",
				"MSH-6": "FAC", "MSH-9": "ACK$R01$ACK", "MSH-10": id, "MSH-11": "T$A", "MSH-12": "2.5.1", "MSA-2": "X",
				"ERR-3": "207$Application internal error$HL70357", "ERR-8": "a*F*b*S*c*R*d*E*e*T*f"}},
		{name: "character set echoed", msg: []byte("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|Y|P|2.5.1|||AL|NE||UNICODE UTF-8\r"),
			outcome: Accepted, code: "CA", want: map[string]string{"MSH-18": "UNICODE UTF-8", "MSH-13": "", "MSH-15": "", "MSH-16": "", "MSH-17": ""}},
		{name: "no usable header: standard delimiters, empty MSA-2", msg: nil, outcome: Refused, reason: notHL7, code: "AR",
			want: map[string]string{"MSH-2": `^~\&`, "MSH-3": "", "MSH-9": "ACK", "MSH-11": "P", "MSH-12": "2.5.1",
				"MSA-1": "AR", "MSA-2": "", "ERR-3": "100^Segment sequence error^HL70357"}},
		{name: "batch: the first MSH answers", msg: []byte("FHS|^~\\&|A\rBHS|^~\\&|A\rMSH|^~\\&|A|B|C|D|20260101||ORU^R01|B1|P|2.5\rBTS|1\rFTS|1\r"),
			outcome: Accepted, code: "AA", want: map[string]string{"MSA-2": "B1", "MSH-5": "A", "MSH-9": "ACK^R01^ACK"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h *Header
			if c.msg != nil {
				var ok bool
				if h, ok = ParseHeader(c.msg); !ok {
					t.Fatalf("ParseHeader refused %q", c.msg)
				}
			}
			code, send := Decide(h, c.outcome)
			if !send {
				if c.code != "" {
					t.Fatalf("no ACK, want %s", c.code)
				}
				return
			}
			if code != c.code {
				t.Fatalf("code %q, want %q", code, c.code)
			}
			r := c.reason
			if c.outcome == Accepted {
				r = nil
			}
			got := fieldsOf(t, BuildACK(h, code, r, now, id))
			for k, v := range c.want {
				if gv, ok := got[k]; !ok || gv != v {
					t.Errorf("%s = %q (present %v), want %q\nACK: %q", k, gv, ok, v, got["MSH"]+"\r"+got["MSA"]+"\r"+got["ERR"])
				}
			}
			for _, k := range c.absent {
				if v, ok := got[k]; ok {
					t.Errorf("%s present (%q), want absent", k, v)
				}
			}
			if len(got["MSH-10"]) != 20 {
				t.Errorf("MSH-10 %q: want 20 characters", got["MSH-10"])
			}
		})
	}
}

func TestNewControlIDIsFreshAnd20Chars(t *testing.T) {
	seen := map[string]bool{}
	now := time.Now()
	for range 1000 {
		id := NewControlID(now)
		if len(id) != 20 || seen[id] {
			t.Fatalf("control id %q: length %d, seen before %v", id, len(id), seen[id])
		}
		seen[id] = true
	}
}

func TestParseHeaderRefusesWhatIsNotHL7(t *testing.T) {
	for _, b := range []string{"", "hello", "MSH", "MSHa^~\\&|x", "PID|1\rMSH|^~\\&|A", "MSH|^^\\&|A|B", "MSH|^~\\&|||||||"[:5]} {
		if _, ok := ParseHeader([]byte(b)); ok {
			t.Errorf("ParseHeader(%q) ok, want refused", b)
		}
	}
}
