package mllp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecourier/courier/agent/hl7"
	"github.com/edgecourier/courier/spool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// corpusDir is the shared HL7 corpus, relative to this package.
const corpusDir = "../../../shared/corpus/hl7/fhir-converter"

// corpus returns every corpus message, normalised as MLLP carries it (CR segment
// ends, no BOM), keyed by file name.
func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(corpusDir, "*.hl7"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no HL7 corpus at %s (%v): the shared corpus must be beside the repository", corpusDir, err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = Normalize(b)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hl7Inspector is agent/hl7's inspector as the agent hands it to the spool (the
// adapter itself lives in package agent), so dedupe follows the HL7 rule here too.
func hl7Inspector() spool.Inspector {
	inspect := hl7.Inspector(nil, 0)
	return func(path string) *spool.Envelope {
		e := inspect(path)
		if e == nil {
			return nil
		}
		data, _ := json.Marshal(e.Data)
		return &spool.Envelope{DedupeKey: e.DedupeKey, ContentKey: e.ContentKey, OrderKey: e.OrderKey,
			IsCorrection: e.IsCorrection, ContentType: e.ContentType, Data: data}
	}
}

// world is a real spool with a listener on loopback, running until the test ends.
type world struct {
	t    testing.TB
	sp   *spool.Spool
	l    *Listener
	addr string
	stop func()
}

func newWorld(t testing.TB, sopts spool.Options, o Options) *world {
	t.Helper()
	if sopts.Dir == "" {
		sopts.Dir = t.TempDir()
	}
	if sopts.Inspect == nil {
		sopts.Inspect = hl7Inspector()
	}
	sopts.Sinks = []string{"file"}
	ctx := context.Background()
	sp, err := spool.Open(ctx, sopts)
	if err != nil {
		t.Fatal(err)
	}
	if o.Name == "" {
		o.Name = "lab-feed"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	l, err := Listen(sp, o)
	if err != nil {
		sp.Close()
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx) }()
	w := &world{t: t, sp: sp, l: l, addr: l.Addr().String()}
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("listener Run: %v", err)
			}
			sp.Close()
		})
	}
	t.Cleanup(w.stop)
	return w
}

// items returns the spool's items of this source in a state ("" = any).
func (w *world) items(state spool.State) []*spool.Item {
	w.t.Helper()
	its, err := w.sp.List(context.Background(), spool.ListFilter{State: state})
	if err != nil {
		w.t.Fatal(err)
	}
	return its
}

// stored maps the SHA-256 of every received item's stored bytes to how often it is there.
func (w *world) stored() map[string]int {
	w.t.Helper()
	out := map[string]int{}
	for _, it := range w.items(spool.StateReceived) {
		b, err := os.ReadFile(w.sp.ContentPath(it.ID))
		if err != nil {
			w.t.Fatalf("content of %s: %v", it.ID, err)
		}
		if digest(b) != it.SHA256 {
			w.t.Fatalf("item %s: stored bytes do not match its sha256", it.ID)
		}
		if it.SourceKind != "mllp" || it.Source != "lab-feed" {
			w.t.Errorf("item %s: source %q kind %q, want lab-feed/mllp", it.ID, it.Source, it.SourceKind)
		}
		out[it.SHA256]++
	}
	return out
}

func (w *world) dial() *Client {
	w.t.Helper()
	c, err := Dial(context.Background(), w.addr, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	return c
}

func (w *world) send(c *Client, msg []byte) []byte {
	w.t.Helper()
	ack, err := c.Send(msg, 30*time.Second)
	if err != nil {
		w.t.Fatalf("send: %v", err)
	}
	return ack
}

// waitClosed reads from c until the server closes it (bounded).
func waitClosed(t testing.TB, c net.Conn, within time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	var got bytes.Buffer
	_, err := io.Copy(&got, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %s", within)
	}
	return got.Bytes()
}

// msg builds a small ORU with the given MSH-15/16 and version.
func msg(control, version, msh15, msh16 string) []byte {
	return []byte("MSH|^~\\&|LABAPP|LABFAC|COURIER|CLINIC|20260815081500+0100||ORU^R01^ORU_R01|" + control +
		"|P|" + version + "|||" + msh15 + "|" + msh16 + "\r" +
		"PID|1||MRN123^^^HOSP^MR||DOE^JANE\r" +
		"OBR|1||FILL-" + control + "|24331-1^Lipid panel^LN|||20260815080000\r" +
		"OBX|1|NM|2093-3^Cholesterol^LN||196|mg/dL|||||F\r")
}
