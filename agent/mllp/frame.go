package mllp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MLLP block characters.
const (
	startBlock = 0x0B // VT
	endBlock   = 0x1C // FS
	carriageR  = 0x0D // CR, follows FS
)

// headKeep is how much of an oversize message is kept: enough for its MSH, so
// the refusal can still be addressed to the sender.
const headKeep = 64 << 10

// errHalfFrame: the connection ended inside a frame.
var errHalfFrame = errors.New("connection closed inside a frame")

// frame is one message as received: data holds its bytes without the framing,
// or only the first headKeep bytes when it was larger than the limit.
type frame struct {
	data     []byte
	size     int64 // bytes between start and end block
	tooLarge bool
	garbage  int64 // bytes skipped before its start block (CR/LF not counted)
}

// frameReader reads MLLP frames. A frame is VT message FS CR; a FS alone also
// ends it (some senders omit the CR), and the CR is then skipped as whitespace
// before the next frame. Anything between frames is skipped and counted.
type frameReader struct {
	br  *bufio.Reader
	max int64
	buf bytes.Buffer // reused between frames
}

func newFrameReader(r io.Reader, max int64) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next reads the next frame. started is called once its start block has been
// read (the caller switches from the idle to the per-frame deadline). io.EOF: the
// peer closed between frames; errHalfFrame: inside one. The returned data is
// valid until the next call.
func (fr *frameReader) next(started func()) (frame, error) {
	var f frame
	for {
		c, err := fr.br.ReadByte()
		if err != nil {
			return f, err
		}
		if c == startBlock {
			break
		}
		if c != carriageR && c != '\n' {
			f.garbage++
		}
	}
	if started != nil {
		started()
	}
	if fr.buf.Cap() > 1<<20 {
		fr.buf = bytes.Buffer{} // one big message must not pin its buffer for the connection's life
	}
	fr.buf.Reset()
	for {
		chunk, err := fr.br.ReadSlice(endBlock)
		end := err == nil
		if end {
			chunk = chunk[:len(chunk)-1]
		}
		f.size += int64(len(chunk))
		switch {
		case !f.tooLarge && f.size <= fr.max:
			fr.buf.Write(chunk)
		case !f.tooLarge:
			f.tooLarge = true
			if keep := headKeep - fr.buf.Len(); keep > 0 {
				fr.buf.Write(chunk[:min(keep, len(chunk))])
			}
			if fr.buf.Len() > headKeep {
				fr.buf.Truncate(headKeep)
			}
		}
		if end {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return f, errHalfFrame
		}
		return f, err
	}
	// The CR after FS, when it is already here; otherwise it is skipped later.
	if fr.br.Buffered() > 0 {
		if b, _ := fr.br.Peek(1); len(b) == 1 && b[0] == carriageR {
			fr.br.ReadByte()
		}
	}
	f.data = fr.buf.Bytes()
	return f, nil
}
