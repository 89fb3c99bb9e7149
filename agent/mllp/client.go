package mllp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// maxACK bounds an acknowledgement we read: an ACK is a few hundred bytes.
const maxACK = 1 << 20

// Client sends messages over one MLLP connection and reads one ACK for each.
// It is what `courier mllp send` uses; it is no part of the agent.
type Client struct {
	conn net.Conn
	fr   *frameReader
}

// Dial connects to addr (with TLS when tc is not nil).
func Dial(ctx context.Context, addr string, tc *tls.Config) (*Client, error) {
	var d net.Dialer
	var c net.Conn
	var err error
	if tc != nil {
		td := tls.Dialer{NetDialer: &d, Config: tc}
		c, err = td.DialContext(ctx, "tcp", addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("mllp: connect to %s: %w", addr, err)
	}
	return &Client{conn: c, fr: newFrameReader(c, maxACK)}, nil
}

// Send writes msg in one frame and waits up to timeout for the answer frame.
func (c *Client) Send(msg []byte, timeout time.Duration) ([]byte, error) {
	if timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(timeout))
		defer c.conn.SetDeadline(time.Time{})
	}
	out := make([]byte, 0, len(msg)+3)
	out = append(append(append(out, startBlock), msg...), endBlock, carriageR)
	if _, err := c.conn.Write(out); err != nil {
		return nil, fmt.Errorf("mllp: send: %w", err)
	}
	f, err := c.fr.next(nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("mllp: no acknowledgement within %s: %w", timeout, err)
		}
		return nil, fmt.Errorf("mllp: read acknowledgement: %w", err)
	}
	if f.tooLarge {
		return nil, fmt.Errorf("mllp: acknowledgement larger than %d bytes", maxACK)
	}
	return bytes.Clone(f.data), nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// ACKCode is MSA-1 of an acknowledgement ("" if it has none).
func ACKCode(ack []byte) string {
	h, ok := ParseHeader(ack)
	if !ok {
		return ""
	}
	for _, seg := range bytes.FieldsFunc(ack, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if bytes.HasPrefix(seg, []byte("MSA")) && len(seg) > 3 && seg[3] == h.Field {
			v := seg[4:]
			if i := bytes.IndexByte(v, h.Field); i >= 0 {
				v = v[:i]
			}
			return string(v)
		}
	}
	return ""
}

// Normalize makes a file's text a message as MLLP carries it: without a UTF-8
// BOM, segments ended by CR (files often use LF or CRLF), no trailing blank lines.
func Normalize(b []byte) []byte {
	b = bytes.TrimPrefix(b, []byte{0xEF, 0xBB, 0xBF})
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\r"))
	b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r"))
	b = bytes.TrimRight(b, "\r")
	return append(b, '\r')
}

// SplitFrames returns the messages of b when it holds MLLP frames (a capture of
// a link), else nil.
func SplitFrames(b []byte) [][]byte {
	if i := bytes.IndexByte(b, startBlock); i < 0 || len(bytes.TrimSpace(b[:i])) > 0 {
		return nil
	}
	var out [][]byte
	fr := newFrameReader(bytes.NewReader(b), int64(len(b)))
	for {
		f, err := fr.next(nil)
		if err != nil {
			return out
		}
		out = append(out, bytes.Clone(f.data))
	}
}

// Post writes msg in one frame without waiting for an answer: for messages whose
// MSH-15 and MSH-16 ask for none.
func (c *Client) Post(msg []byte, timeout time.Duration) error {
	if timeout > 0 {
		c.conn.SetWriteDeadline(time.Now().Add(timeout))
		defer c.conn.SetWriteDeadline(time.Time{})
	}
	out := make([]byte, 0, len(msg)+3)
	out = append(append(append(out, startBlock), msg...), endBlock, carriageR)
	if _, err := c.conn.Write(out); err != nil {
		return fmt.Errorf("mllp: send: %w", err)
	}
	return nil
}

// WantsACK reports whether msg asks for any acknowledgement of a successful
// delivery (false only when MSH-15 and MSH-16 ask for none).
func WantsACK(msg []byte) bool {
	h, ok := ParseHeader(msg)
	if !ok {
		return true
	}
	_, send := Decide(h, Accepted)
	return send
}
