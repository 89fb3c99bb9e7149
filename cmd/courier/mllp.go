package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/edgecourier/courier/agent/mllp"
)

const mllpUsage = `Usage: courier mllp send --to HOST:PORT [--timeout 30s] [--tls [--tls-ca F] [--tls-cert F --tls-key F]] FILE...

Sends each FILE as one HL7 v2 message over MLLP on one connection and prints each
acknowledgement. A file that already holds MLLP frames (a capture of a link) is
sent frame by frame. Segment ends are sent as CR and a UTF-8 BOM is dropped.
Exit status 0 only if every message was answered AA or CA; a message whose
MSH-15 and MSH-16 ask for no acknowledgement is sent, reported and counts as
unconfirmed.
`

func cmdMLLP(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "send" {
		fmt.Fprint(stderr, mllpUsage)
		return 2
	}
	fs := newFlags("mllp send", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, mllpUsage) }
	to := fs.String("to", "", "HOST:PORT of the MLLP listener")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for each acknowledgement")
	useTLS := fs.Bool("tls", false, "connect with TLS")
	caFile := fs.String("tls-ca", "", "CA certificates (PEM) to verify the listener (default: the system's)")
	certFile := fs.String("tls-cert", "", "client certificate (PEM) for mutual TLS")
	keyFile := fs.String("tls-key", "", "client key (PEM) for mutual TLS")
	files, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return parseFailed(err)
	}
	if *to == "" {
		return usageErr(stderr, "mllp send: --to HOST:PORT is required")
	}
	if len(files) == 0 {
		return usageErr(stderr, "mllp send: name at least one FILE to send")
	}
	var tc *tls.Config
	if *useTLS || *caFile != "" || *certFile != "" {
		if tc, err = clientTLS(*caFile, *certFile, *keyFile); err != nil {
			return usageErr(stderr, "mllp send: %v", err)
		}
	}
	type message struct {
		label string
		data  []byte
	}
	var msgs []message
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fail(stderr, "mllp send: %v", err)
		}
		if frames := mllp.SplitFrames(b); frames != nil {
			for i, fr := range frames {
				msgs = append(msgs, message{fmt.Sprintf("%s#%d", f, i+1), fr})
			}
			continue
		}
		msgs = append(msgs, message{f, mllp.Normalize(b)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	c, err := mllp.Dial(ctx, *to, tc)
	cancel()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer c.Close()
	ok := true
	for _, m := range msgs {
		if !mllp.WantsACK(m.data) {
			if err := c.Post(m.data, *timeout); err != nil {
				return fail(stderr, "%s: %v", m.label, err)
			}
			fmt.Fprintf(stdout, "%s: sent, no acknowledgement (MSH-15/MSH-16 ask for none)\n", m.label)
			ok = false
			continue
		}
		ack, err := c.Send(m.data, *timeout)
		if err != nil {
			return fail(stderr, "%s: %v (this message and those after it are unconfirmed)", m.label, err)
		}
		code := mllp.ACKCode(ack)
		if code != "AA" && code != "CA" {
			ok = false
		}
		if code == "" {
			code = "no MSA"
		}
		fmt.Fprintf(stdout, "%s: %s\n", m.label, code)
		for _, seg := range bytes.Split(bytes.TrimRight(ack, "\r\n"), []byte("\r")) {
			fmt.Fprintf(stdout, "  %s\n", strings.TrimRight(string(seg), "\n"))
		}
	}
	if !ok {
		return 1
	}
	return 0
}

func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificates found", caFile)
		}
		tc.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
