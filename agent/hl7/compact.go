package hl7

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sort"
)

// Fields longer than longField (an embedded document, in practice) are not
// kept whole: their first keepHead and last keepTail bytes stay, and the
// middle is replaced by a marker holding its SHA-256. The envelope needs only
// the ends (ED type and encoding come first, RP's type after the pointer), the
// ContentKey still covers every byte through the digest, and memory stays
// bounded however large the document.
const (
	longField = 64 << 10
	keepHead  = 8 << 10
	keepTail  = 4 << 10
)

// errTooLarge: the compacted file would exceed its limit.
var errTooLarge = errors.New("hl7: file too large to read its envelope")

// span is one compacted field.
type span struct {
	at       int   // where the field starts in the compacted data
	head     int   // bytes kept from its start
	mark     int   // marker length
	tail     int   // bytes kept from its end
	orig     int64 // where the field starts in the original data
	origSize int64 // its original length
}

func (s span) end() int { return s.at + s.head + s.mark + s.tail }

// compacted is a file's data (after BOM and MLLP framing) with long fields
// compacted, and the way back to original offsets.
type compacted struct {
	data   []byte
	spans  []span
	skip   int64 // BOM and MLLP start byte before the data
	hasBOM bool
	size   int64 // original data length (without BOM/MLLP)
}

// origOffset maps an offset in the compacted data to the original file
// (BOM and MLLP byte included). An offset inside a marker maps to the end of
// the head.
func (c *compacted) origOffset(p int) int64 {
	i := sort.Search(len(c.spans), func(i int) bool { return c.spans[i].at > p }) - 1
	if i < 0 {
		return c.skip + int64(p)
	}
	s := c.spans[i]
	switch {
	case p < s.at+s.head:
		return c.skip + s.orig + int64(p-s.at)
	case p < s.at+s.head+s.mark:
		return c.skip + s.orig + int64(s.head)
	case p <= s.end():
		return c.skip + s.orig + s.origSize - int64(s.end()-p)
	}
	return c.skip + s.orig + s.origSize + int64(p-s.end())
}

// compact reads r to the end (or to the MLLP end byte of a framed file) and
// returns its compacted data; more than max compacted bytes is errTooLarge.
func compact(r io.Reader, max int64) (*compacted, error) {
	return compactWith(r, max, longField, keepHead, keepTail)
}

// sizeHint is the input's length when r knows it (a bytes.Reader), else 64 KiB.
func sizeHint(r io.Reader) int {
	if l, ok := r.(interface{ Len() int }); ok {
		return l.Len()
	}
	return 64 << 10
}

// compactWith is compact with other sizes (the fuzz test makes them tiny).
func compactWith(r io.Reader, max int64, longField, keepHead, keepTail int) (*compacted, error) {
	hint := sizeHint(r)
	br := bufio.NewReaderSize(r, min(64<<10, hint+16))
	c := &compacted{}
	if head, _ := br.Peek(3); len(head) == 3 && string(head) == string(bom) {
		br.Discard(3)
		c.skip, c.hasBOM = 3, true
	}
	framed := false
	if head, _ := br.Peek(1); len(head) == 1 && head[0] == mllpStart {
		br.Discard(1)
		c.skip++
		framed = true
	}
	var (
		out        = make([]byte, 0, min(int64(hint), max, 1<<20))
		orig       int64  // original offset of the next byte
		sep        byte   = '|'
		segStart          = 0
		fieldStart        = 0
		fieldOrig  int64  = 0
		long              = false
		h                 = sha256.New()
		pending    []byte // the long field's bytes after its head, not yet hashed
	)
	endField := func() {
		if !long {
			return
		}
		// Everything pending but the last keepTail bytes is the middle.
		cut := max0(len(pending) - keepTail)
		h.Write(pending[:cut])
		tail := pending[cut:]
		mark := "\x00sha256:" + hex.EncodeToString(h.Sum(nil)) + "\x00"
		s := span{at: fieldStart, head: keepHead, mark: len(mark), tail: len(tail),
			orig: fieldOrig, origSize: orig - fieldOrig}
		out = append(out, mark...)
		out = append(out, tail...)
		c.spans = append(c.spans, s)
		long, pending = false, pending[:0]
		h.Reset()
	}
	var special [256]bool // bytes that end a field
	setSpecial := func() {
		special = [256]bool{}
		special['\r'], special['\n'], special[sep] = true, true, true
		if framed {
			special[mllpEnd] = true
		}
	}
	setSpecial()
	for {
		chunk, err := br.ReadSlice(0) // whatever is buffered
		for i := 0; i < len(chunk); i++ {
			b := chunk[i]
			if long && !special[b] {
				// Inside a long field: take the run up to its end at once.
				j := i
				for j < len(chunk) && !special[chunk[j]] {
					j++
				}
				pending = append(pending, chunk[i:j]...)
				orig += int64(j - i)
				if len(pending) >= 2*keepTail+longField {
					n := len(pending) - keepTail
					h.Write(pending[:n])
					pending = append(pending[:0], pending[n:]...)
				}
				i = j - 1
				continue
			}
			if framed && b == mllpEnd {
				endField()
				c.data, c.size = out, orig
				return c, nil
			}
			if b == '\r' || b == '\n' || b == sep {
				endField()
				if b == '\r' || b == '\n' {
					segStart = len(out) + 1
				}
				out = append(out, b)
				orig++
				fieldStart, fieldOrig = len(out), orig
				continue
			}
			if len(out)-segStart >= 4 {
				// Past a segment's name and separator: take the run of
				// ordinary bytes at once, up to where the field turns long.
				j := i
				room := longField + 1 - (len(out) - fieldStart)
				for j < len(chunk) && j-i < room && !special[chunk[j]] {
					j++
				}
				if j > i+1 {
					out = append(out, chunk[i:j-1]...)
					orig += int64(j - 1 - i)
					i = j - 1
					b = chunk[i]
				}
			}
			out = append(out, b)
			orig++
			// The fourth byte of a header segment is its field separator.
			if len(out)-segStart == 4 {
				switch string(out[segStart : segStart+3]) {
				case "MSH", "FHS", "BHS":
					if isDelimiter(b) {
						sep = b
						setSpecial()
						fieldStart, fieldOrig = len(out), orig
					}
				}
			}
			if len(out)-fieldStart > longField {
				long = true
				pending = append(pending[:0], out[fieldStart+keepHead:]...)
				out = out[:fieldStart+keepHead]
			}
			if int64(len(out)) > max {
				return nil, errTooLarge
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	endField()
	c.data, c.size = out, orig
	return c, nil
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
