package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecourier/courier/agent/mllp"
	"github.com/edgecourier/courier/spool"
)

// listener runs a real MLLP source on a real spool for the CLI to talk to.
func listener(t *testing.T) (string, *spool.Spool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sp, err := spool.Open(ctx, spool.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := mllp.Listen(sp, mllp.Options{Name: "lab", Listen: "127.0.0.1:0", MaxMessage: 2048,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; sp.Close() })
	return l.Addr().String(), sp
}

func TestMLLPSend(t *testing.T) {
	addr, sp := listener(t)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// LF segment ends and a BOM, as files often have them.
	orig := write("a.hl7", "\ufeffMSH|^~\\&|LAB|FAC|CUR|CLI|20260101||ORU^R01^ORU_R01|CTL-A|P|2.5.1\nPID|1\nOBX|1|NM|X||1\n")
	enh := write("b.hl7", "MSH|^~\\&|LAB|FAC|CUR|CLI|20260101||ORU^R01^ORU_R01|CTL-B|P|2.5.1|||AL|NE\rPID|1\r")
	framed := write("c.mllp", "\x0bMSH|^~\\&|LAB|FAC|CUR|CLI|20260101||ADT^A01|CTL-C1|P|2.3\rPID|1\r\x1c\r"+
		"\x0bMSH|^~\\&|LAB|FAC|CUR|CLI|20260101||ADT^A01|CTL-C2|P|2.3\rPID|2\r\x1c\r")

	var out, errb bytes.Buffer
	if code := run([]string{"mllp", "send", "--to", addr, orig, enh, framed}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	o := out.String()
	for _, want := range []string{orig + ": AA\n  MSH|^~\\&|CUR|CLI|LAB|FAC|", "  MSA|AA|CTL-A\n",
		enh + ": CA\n", "  MSA|CA|CTL-B\n", framed + "#1: AA\n", "|ACK^A01|", framed + "#2: AA\n", "  MSA|AA|CTL-C2\n"} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q:\n%s", want, o)
		}
	}
	its, err := sp.List(context.Background(), spool.ListFilter{State: spool.StateReceived})
	if err != nil || len(its) != 4 {
		t.Fatalf("%d received items (%v), want 4", len(its), err)
	}
	stored, _ := os.ReadFile(sp.ContentPath(its[len(its)-1].ID)) // oldest: a.hl7
	if string(stored) != "MSH|^~\\&|LAB|FAC|CUR|CLI|20260101||ORU^R01^ORU_R01|CTL-A|P|2.5.1\rPID|1\rOBX|1|NM|X||1\r" {
		t.Errorf("a.hl7 stored as %q: want CR segment ends, no BOM", stored)
	}

	out.Reset()
	errb.Reset()
	bad := write("bad.txt", "not HL7 at all")
	big := write("big.hl7", "MSH|^~\\&|LAB|FAC|CUR|CLI|20260101||ORU^R01|CTL-BIG|P|2.5.1\rOBX|1|ED|X||"+strings.Repeat("A", 4096)+"\r")
	if code := run([]string{"mllp", "send", bad, big, "--to", addr}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1 for refused messages\n%s%s", code, out.String(), errb.String())
	}
	if o := out.String(); !strings.Contains(o, bad+": AR\n") || !strings.Contains(o, big+": AR\n") ||
		!strings.Contains(o, "exceeds max_message of 2048 bytes") || !strings.Contains(o, "not an HL7 v2 message") {
		t.Errorf("refusals not shown:\n%s", o)
	}
}

func TestMLLPSendUsage(t *testing.T) {
	for _, args := range [][]string{{"mllp"}, {"mllp", "send", "x.hl7"}, {"mllp", "send", "--to", "127.0.0.1:1"}, {"mllp", "get"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"mllp", "send", "--to", "127.0.0.1:1", "--timeout", "2s", "/nonexistent.hl7"}, &out, &errb); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
}
