package events

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecourier/courier/spool"
)

func item() *spool.Item {
	at := time.Date(2026, 11, 25, 20, 15, 3, 123e6, time.UTC)
	return &spool.Item{
		ID: "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d", Source: "lab-inbox", SourceKind: "folder",
		Filename: "Mueller_Hans_1961.pdf", Size: 482113, SHA256: strings.Repeat("ab", 32),
		ContentType: "application/pdf", Priority: spool.PriorityHigh, Tries: 2,
		Location: "https://ingest.example.org/files/0193b0c2", ReceivedAt: at.Add(-time.Minute),
		VerifiedAt: at, UpdatedAt: at.Add(time.Hour),
	}
}

func TestBuildVerified(t *testing.T) {
	ev, err := Build(item(), spool.EventVerified, Options{AgentID: "clinic-042"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d.verified", "source": "courier://clinic-042",
		"subject": "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4d", "time": "2026-11-25T20:15:03.123Z",
		"type": "org.edgecourier.file.verified.v1", "specversion": "1.0",
	}
	got := map[string]string{"id": ev.ID, "source": ev.Source, "subject": ev.Subject, "time": ev.Time, "type": ev.Type, "specversion": ev.SpecVersion}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	b, _ := json.Marshal(ev)
	if strings.Contains(string(b), "Mueller") {
		t.Errorf("event carries the file name with send_filenames off: %s", b)
	}
	if ev.Data.Priority != "high" || ev.Data.Attempts != 2 || ev.Data.Location == "" || ev.Data.Source.Kind != "folder" {
		t.Errorf("data: %+v", ev.Data)
	}
	if ev.Data.HL7 != nil || ev.Data.FHIR != nil {
		t.Errorf("non-HL7 item has hl7/fhir parts")
	}
	withNames, _ := Build(item(), spool.EventVerified, Options{AgentID: "a", SendFilenames: true})
	if withNames.Data.Filename != "Mueller_Hans_1961.pdf" {
		t.Errorf("send_filenames on: filename %q", withNames.Data.Filename)
	}
}

// A redelivered event is the same bytes: same id, same time, same body.
func TestBuildIsStable(t *testing.T) {
	a, _ := Marshal(item(), spool.EventVerified, Options{AgentID: "x"})
	time.Sleep(2 * time.Millisecond)
	b, _ := Marshal(item(), spool.EventVerified, Options{AgentID: "x"})
	if string(a) != string(b) {
		t.Errorf("two builds differ:\n%s\n%s", a, b)
	}
}

func TestBuildOtherTypesAndHL7(t *testing.T) {
	it := item()
	it.Reason = "server answered 413: file too large"
	it.DuplicateOf = "0193b0c2-0000-7000-8000-000000000000"
	it.Envelope = json.RawMessage(`{"message_type":"ORU^R01","control_id":"C1"}`)
	it.Corrects = "0193b0c2-1111-7000-8000-000000000000"
	it.ControlIDReused = true
	q, _ := Build(it, spool.EventQuarantined, Options{AgentID: "x"})
	if q.ID != it.ID+".quarantined" || q.Data.Reason != it.Reason || q.Data.Location != "" {
		t.Errorf("quarantined: %+v", q)
	}
	d, _ := Build(it, spool.EventDuplicate, Options{AgentID: "x"})
	if d.ID != it.ID+".duplicate" || d.Data.DuplicateOf != it.DuplicateOf {
		t.Errorf("duplicate: %+v", d)
	}
	called := false
	v, _ := Build(it, spool.EventVerified, Options{AgentID: "x", FHIR: func(*spool.Item) (any, bool) {
		called = true
		return map[string]string{"resourceType": "DocumentReference"}, true
	}})
	var h map[string]any
	json.Unmarshal(v.Data.HL7, &h)
	if h["corrects"] != it.Corrects || h["control_id_reused"] != true || h["message_type"] != "ORU^R01" {
		t.Errorf("hl7 part: %s", v.Data.HL7)
	}
	if !called || v.Data.FHIR == nil {
		t.Errorf("verified HL7 event without fhir part")
	}
}

// failingSink fails its first n publishes, like a broker that is away. It is a
// plain Sink (no batches), so the publisher's one-by-one path is tested too.
type failingSink struct {
	fail atomic.Int32
	fs   *FileSink
}

func (f *failingSink) Name() string { return f.fs.Name() }

func (f *failingSink) Publish(ctx context.Context, id string, p []byte) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("sink away")
	}
	return f.fs.Publish(ctx, id, p)
}

// The publisher drains the real spool's outbox into the file sink; a failing
// sink is retried; the item ends done with its bytes gone.
func TestPublisherToFileSink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	sp, err := spool.Open(ctx, spool.Options{Dir: filepath.Join(dir, "spool"), Sinks: []string{"file"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var ids []string
	for i := 0; i < 3; i++ {
		it, err := sp.Receive(ctx, spool.Intake{Source: "s", SourceKind: "folder"}, strings.NewReader(strings.Repeat("x", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		l, err := sp.Lease(ctx, "w", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := sp.MarkVerified(ctx, l.ID, "w", "http://x/"+l.ID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, it.ID)
	}
	fs, err := OpenFile(filepath.Join(dir, "events.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	sink := &failingSink{fs: fs}
	sink.fail.Store(1)
	p := &Publisher{Outbox: sp, Sinks: []Sink{sink}, Options: Options{AgentID: "t"}, Logger: testLogger(), Poll: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := sp.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c.ByState[spool.StateDone] == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("items not done: %v", c.ByState)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(dir, "events.jsonl"))
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev CloudEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line is not an event: %v", err)
		}
		seen[ev.ID] = true
	}
	for _, id := range ids {
		if !seen[id+".verified"] {
			t.Errorf("no event for %s", id)
		}
		if _, err := os.Stat(sp.ContentPath(id)); !os.IsNotExist(err) {
			t.Errorf("bytes of published item %s still in the spool", id)
		}
	}
}

// The file sink's batch path: one fsync for many events, every line an event.
func TestFileSinkBatch(t *testing.T) {
	fs, err := OpenFile(filepath.Join(t.TempDir(), "e.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	var ids []string
	var payloads [][]byte
	for i := 0; i < 100; i++ {
		it := item()
		it.ID = fmt.Sprintf("0193b0c2-0000-7000-8000-%012d", i)
		b, _ := Marshal(it, spool.EventVerified, Options{AgentID: "x"})
		ids, payloads = append(ids, ID(it.ID, spool.EventVerified)), append(payloads, b)
	}
	for i, err := range fs.PublishBatch(context.Background(), ids, payloads) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	b, _ := os.ReadFile(fs.path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 100 {
		t.Fatalf("%d lines, want 100", len(lines))
	}
	var ev CloudEvent
	if err := json.Unmarshal([]byte(lines[99]), &ev); err != nil || ev.ID != ids[99] {
		t.Fatalf("last line: %v %q", err, ev.ID)
	}
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkFileSink compares one fsync per event with one per batch of 256, in the
// same run: what draining a weekend's backlog of events costs.
func BenchmarkFileSink(b *testing.B) {
	payload, _ := Marshal(item(), spool.EventVerified, Options{AgentID: "x"})
	const batch = 256
	ids := make([]string, batch)
	payloads := make([][]byte, batch)
	for i := range ids {
		ids[i], payloads[i] = fmt.Sprint(i), payload
	}
	for _, mode := range []string{"one-by-one", "batch"} {
		b.Run(mode, func(b *testing.B) {
			fs, err := OpenFile(filepath.Join(b.TempDir(), "e.jsonl"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer fs.Close()
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if mode == "batch" {
					fs.PublishBatch(ctx, ids, payloads)
					continue
				}
				for j := range ids {
					fs.Publish(ctx, ids[j], payloads[j])
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// An HL7 message and an attachment stored apart name each other.
func TestBuildAttachmentLinks(t *testing.T) {
	msg := item()
	msg.Envelope = json.RawMessage(`{"message_type":"ORU^R01","control_id":"C1","embedded":[{"index":0}]}`)
	part := item()
	part.ID = "0193b0c2-7d1e-7cc1-9f4e-2f6f1a2b3c4e"
	part.Meta = map[string]string{MetaAttachmentOf: msg.ID}
	o := Options{AgentID: "x", Attachments: func(it *spool.Item) []string {
		if it.ID == msg.ID {
			return []string{part.ID}
		}
		return nil
	}}
	m, _ := Marshal(msg, spool.EventVerified, o)
	p, _ := Marshal(part, spool.EventVerified, o)
	var me, pe map[string]any
	json.Unmarshal(m, &me)
	json.Unmarshal(p, &pe)
	md, pdata := me["data"].(map[string]any), pe["data"].(map[string]any)
	if a, _ := md["attachments"].([]any); len(a) != 1 || a[0] != part.ID || md["attachment_of"] != nil {
		t.Errorf("message event data: attachments %v, attachment_of %v", md["attachments"], md["attachment_of"])
	}
	if pdata["attachment_of"] != msg.ID || pdata["attachments"] != nil {
		t.Errorf("part event data: attachment_of %v, attachments %v", pdata["attachment_of"], pdata["attachments"])
	}
	// Without links, neither key appears.
	plain, _ := Marshal(item(), spool.EventVerified, Options{AgentID: "x"})
	if strings.Contains(string(plain), "attachment") {
		t.Errorf("plain event mentions attachments: %s", plain)
	}
}
