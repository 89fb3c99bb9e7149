package mllp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func addSeeds(f *testing.F) {
	for _, dir := range []string{corpusDir, filepath.Join(corpusDir, "../nhapi-bad-inputs")} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil && len(b) < 64<<10 {
				f.Add(b)
				f.Add(Normalize(b))
			}
		}
	}
	f.Add([]byte("MSH|^~\\&#|A|B|C|D|x||ADT^A01|1|P|2.7|||AL|AL\r"))
	f.Add([]byte("\x0bMSH|^~\\&|\x1c\rgarbage\x0b\x1c"))
}

// FuzzACK: whatever arrives, the answer is a well-formed ACK: MSH with the
// message's (or standard) delimiters, an MSA with a known code, CR segment ends,
// and nothing after the MSH-10 echo that came from the message.
func FuzzACK(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := ParseHeader(b)
		if !ok {
			h = nil
		}
		for _, o := range []Outcome{Accepted, TryLater, Refused} {
			code, send := Decide(h, o)
			if !send {
				continue
			}
			ack := BuildACK(h, code, &Reason{errInternal, "a reason; with | ^ ~ \\ & # in it"}, time.Unix(0, 0), "X")
			if !bytes.HasPrefix(ack, []byte("MSH")) || !bytes.HasSuffix(ack, []byte("\r")) {
				t.Fatalf("ACK %q", ack)
			}
			ah, ok := ParseHeader(ack)
			if !ok {
				t.Fatalf("our ACK does not parse: %q", ack)
			}
			if h != nil && (ah.Field != h.Field || ah.Enc != h.Enc || ah.ControlID() != "X") {
				t.Fatalf("ACK delimiters/MSH-10 changed: %q", ack)
			}
			if got := ACKCode(ack); got != code {
				t.Fatalf("MSA-1 %q, want %q: %q", got, code, ack)
			}
			if bytes.ContainsAny(ack, "\n\x0b\x1c") {
				t.Fatalf("ACK carries a line feed or MLLP block character: %q", ack)
			}
		}
	})
}

// FuzzFrames: the frame reader never panics, never returns more than max bytes of
// a frame, and finds every frame of a clean stream.
func FuzzFrames(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := newFrameReader(bytes.NewReader(b), 1024)
		for range 10000 {
			fm, err := fr.next(nil)
			if err != nil {
				break
			}
			if int64(len(fm.data)) > max(1024, headKeep) || (!fm.tooLarge && int64(len(fm.data)) != fm.size) {
				t.Fatalf("frame of %d bytes (size %d, tooLarge %v)", len(fm.data), fm.size, fm.tooLarge)
			}
		}
	})
}
