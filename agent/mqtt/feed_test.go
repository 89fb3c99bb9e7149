package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/mosquittotest"
	"github.com/edgecourier/courier/spool"
)

// agent is a Conn with one feed, as the agent wires it.
type agent struct {
	conn *Conn
	feed *Feed
}

func startAgent(t *testing.T, broker, id string, sp Receiver, fo FeedOptions) *agent {
	t.Helper()
	c, err := New(testOptions(t, broker, id))
	if err != nil {
		t.Fatal(err)
	}
	if fo.Name == "" {
		fo.Name = "bedside"
	}
	if fo.QoS == 0 {
		fo.QoS = 1
	}
	if len(fo.Topics) == 0 {
		fo.Topics = []string{"devices/+/files/#"}
	}
	f, err := NewFeed(c, sp, fo)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := &agent{conn: c, feed: f}
	t.Cleanup(a.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := f.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *agent) stop() { a.conn.Close() }

func randomPayload(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFeedSpoolsEveryMessageOnce(t *testing.T) {
	b := mosquittotest.Start(t)
	sp := openSpool(t, t.TempDir())
	startAgent(t, b.URL(), "clinic-1", sp, FeedOptions{Priority: spool.PriorityHigh})

	dev := dialClient(t, b.URL(), "hub-1")
	want := map[string]bool{}
	for i := range 100 {
		p := randomPayload(t, 512+i*37)
		want[digest(p)] = true
		dev.publish(fmt.Sprintf("devices/bed-%d/files/f%d.bin", i%7, i), p)
	}
	eventually(t, "100 items spooled", func() bool {
		got, _ := spooled(t, sp)
		return len(got) == 100
	})
	got, others := spooled(t, sp)
	if len(others) != 0 {
		t.Fatalf("unexpected non-received items: %d", len(others))
	}
	for d, it := range got {
		if !want[d] {
			t.Fatalf("spooled payload %s was never published", d)
		}
		if it.Source != "bedside" || it.SourceKind != "mqtt" || it.Priority != spool.PriorityHigh {
			t.Fatalf("item %s: source %q kind %q priority %v", it.ID, it.Source, it.SourceKind, it.Priority)
		}
		if _, leaked := it.Meta["topic"]; leaked || it.SourceRef == "" || it.Meta["topic_level_1"] == "" {
			t.Fatalf("item %s: meta %v, ref %q", it.ID, it.Meta, it.SourceRef)
		}
	}
}

func TestFeedReceivesWhatWasPublishedWhileDown(t *testing.T) {
	b := mosquittotest.Start(t)
	dir := t.TempDir()
	sp := openSpool(t, dir)
	a := startAgent(t, b.URL(), "clinic-2", sp, FeedOptions{})
	a.stop() // clean disconnect: the persistent session keeps the subscription

	dev := dialClient(t, b.URL(), "hub-2")
	want := map[string]bool{}
	for i := range 20 {
		p := randomPayload(t, 1024)
		want[digest(p)] = true
		dev.publish(fmt.Sprintf("devices/d%d/files/x", i), p)
	}
	startAgent(t, b.URL(), "clinic-2", sp, FeedOptions{})
	eventually(t, "the 20 messages published while the agent was down", func() bool {
		got, _ := spooled(t, sp)
		return len(got) == 20
	})
	got, _ := spooled(t, sp)
	for d := range want {
		if got[d] == nil {
			t.Fatalf("payload %s missing", d)
		}
	}
}

func TestFeedPayloadsAndTopics(t *testing.T) {
	b := mosquittotest.Start(t)
	dir := t.TempDir()
	sp := openSpool(t, dir)
	fo := FeedOptions{MaxPayload: 1024}
	a := startAgent(t, b.URL(), "clinic-3", sp, fo)

	binary := make([]byte, 256*4)
	for i := range binary {
		binary[i] = byte(i)
	}
	oversized := randomPayload(t, 1025)
	cases := []struct {
		name, topic string
		payload     []byte
		level1      string
	}{
		{"binary", "devices/bed-2/files/bin", binary, "bed-2"},
		{"spaces", "devices/bed 3 west/files/a b.pdf", []byte("spaces"), "bed 3 west"},
		{"unicode", "devices/Bett-Ü-ß-日本/files/ü", []byte("unicode"), "Bett-Ü-ß-日本"},
		{"percent", "devices/%20%2F%/files/%00", []byte("percent"), "%20%2F%"},
		{"exact limit", "devices/bed-4/files/limit", bytes.Repeat([]byte{'x'}, 1024), "bed-4"},
	}
	dev := dialClient(t, b.URL(), "hub-3")
	dev.publish("devices/big/files/too-large", oversized)
	dev.publish("devices/bed-1/files/empty", nil) // rejected: no file in it
	for _, c := range cases {
		dev.publish(c.topic, c.payload)
	}
	eventually(t, "all payloads spooled and the oversized and empty ones rejected", func() bool {
		got, others := spooled(t, sp)
		return len(got) == len(cases) && len(others) == 2
	})
	got, others := spooled(t, sp)
	for _, c := range cases {
		it := got[digest(c.payload)]
		if it == nil {
			t.Fatalf("%s: not spooled", c.name)
		}
		if it.Size != int64(len(c.payload)) || it.SourceRef != c.topic || it.Meta["topic_level_1"] != c.level1 {
			t.Fatalf("%s: size %d ref %q meta %v", c.name, it.Size, it.SourceRef, it.Meta)
		}
		b, err := os.ReadFile(sp.ContentPath(it.ID))
		if err != nil || !bytes.Equal(b, c.payload) {
			t.Fatalf("%s: stored bytes differ (err %v)", c.name, err)
		}
	}
	rej := others[0]
	if rej.Size == 0 {
		rej = others[1]
	}
	if rej.State != spool.StateRejected || rej.Size != 1025 || rej.Reason == "" || rej.SourceRef != "devices/big/files/too-large" {
		t.Fatalf("rejected item: state %s size %d reason %q ref %q", rej.State, rej.Size, rej.Reason, rej.SourceRef)
	}
	evs, err := sp.Pending(context.Background(), "mqtt", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Type != spool.EventRejected || evs[1].Type != spool.EventRejected {
		t.Fatalf("outbox: want two rejected events (oversized %s, empty), got %+v", rej.ID, evs)
	}

	// Every message was acknowledged: after a restart of the agent nothing comes again.
	// A sentinel published after the restart arrives after any redelivery would have.
	a.stop()
	startAgent(t, b.URL(), "clinic-3", sp, fo)
	dev.publish("devices/sentinel/files/s", []byte("sentinel"))
	eventually(t, "sentinel spooled", func() bool {
		got, _ := spooled(t, sp)
		return got[digest([]byte("sentinel"))] != nil
	})
	got, others = spooled(t, sp)
	if len(got) != len(cases)+1 || len(others) != 2 {
		t.Fatalf("after restart: %d received, %d others; something was redelivered", len(got), len(others))
	}
}

// TestFeedHoldsMessagesWhileSpoolFull fills a real spool (max_bytes), restarts the
// agent while messages are held, then drains the spool the way the uploader does.
func TestFeedHoldsMessagesWhileSpoolFull(t *testing.T) {
	b := mosquittotest.Start(t)
	sp := openSpool(t, t.TempDir(), func(o *spool.Options) { o.MaxBytes = 1500 })
	fo := FeedOptions{RetryInitial: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	a := startAgent(t, b.URL(), "clinic-4", sp, fo)

	dev := dialClient(t, b.URL(), "hub-4")
	want := map[string]bool{}
	for i := range 6 {
		p := randomPayload(t, 1000)
		want[digest(p)] = true
		dev.publish(fmt.Sprintf("devices/d/files/%d", i), p)
		if i == 0 {
			// The cap is soft for concurrent intakes; fill the spool first.
			eventually(t, "the first message spooled", func() bool {
				got, _ := spooled(t, sp)
				return len(got) == 1
			})
		}
	}
	// The rest are held unacknowledged; a restart of the agent must not lose them.
	a.stop()
	startAgent(t, b.URL(), "clinic-4", sp, fo)

	ctx := context.Background()
	done := map[string]bool{}
	eventually(t, "all six messages through the spool", func() bool {
		it, err := sp.Lease(ctx, "test-uploader", time.Minute)
		if err == spool.ErrEmpty {
			return len(done) == 6
		}
		if err != nil {
			t.Fatalf("lease: %v", err)
		}
		if done[it.SHA256] {
			t.Fatalf("payload %s spooled twice", it.SHA256)
		}
		if !want[it.SHA256] {
			t.Fatalf("unknown payload %s", it.SHA256)
		}
		done[it.SHA256] = true
		if err := sp.MarkVerified(ctx, it.ID, "test-uploader", "http://127.0.0.1/x"); err != nil {
			t.Fatal(err)
		}
		evs, err := sp.Pending(ctx, "mqtt", 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if err := sp.MarkPublished(ctx, ev.Seq); err != nil {
				t.Fatal(err)
			}
		}
		return len(done) == 6
	})
}

// TestFeedSurvivesSIGKILL kills the agent process while a device publishes 100
// messages, starts it again, and expects every payload spooled exactly once.
func TestFeedSurvivesSIGKILL(t *testing.T) {
	b := mosquittotest.Start(t)
	dir := t.TempDir()
	env := []string{"CHILD_BROKER=" + b.URL(), "CHILD_AGENT=clinic-5", "CHILD_SPOOL=" + dir, "CHILD_TOPIC=devices/+/files/#"}
	child := startChild(t, "feed", env...)

	dev := dialClient(t, b.URL(), "hub-5")
	want := map[string]bool{}
	var mu sync.Mutex
	published := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 100 {
			p := randomPayload(t, 2048)
			mu.Lock()
			want[digest(p)] = true
			mu.Unlock()
			tok := dev.c.Publish(fmt.Sprintf("devices/bed-%d/files/%d", i%3, i), 1, false, p)
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Errorf("publish %d: %v", i, tok.Error())
				return
			}
			mu.Lock()
			published++
			mu.Unlock()
		}
	}()
	eventually(t, "30 messages published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return published >= 30
	})
	killChild(t, child)
	child = startChild(t, "feed", env...)
	wg.Wait()

	// The child holds the spool lock; read beside it as the CLI does.
	shared, err := spool.Open(context.Background(), spool.Options{Dir: dir, Sinks: []string{"mqtt"}, Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "100 payloads spooled", func() bool {
		got, _ := spooled(t, shared)
		return len(got) == 100
	})
	shared.Close()
	killChild(t, child)

	sp := openSpool(t, dir)
	got, others := spooled(t, sp)
	if len(got) != 100 {
		t.Fatalf("%d distinct payloads spooled, want 100", len(got))
	}
	for d := range got {
		if !want[d] {
			t.Fatalf("unknown payload %s", d)
		}
	}
	for _, it := range others {
		if it.State != spool.StateDuplicate {
			t.Fatalf("item %s in state %s", it.ID, it.State)
		}
	}
	t.Logf("%d redeliveries recorded as duplicates", len(others))
}

// A subscription left in the session by an earlier config must not stall the feeds:
// its messages are recorded as rejected and acknowledged.
func TestFeedUnroutedTopicIsRejected(t *testing.T) {
	b := mosquittotest.Start(t)
	sp := openSpool(t, t.TempDir())
	a := startAgent(t, b.URL(), "clinic-12", sp, FeedOptions{Topics: []string{"old/+/files/#"}})
	a.stop()
	startAgent(t, b.URL(), "clinic-12", sp, FeedOptions{Topics: []string{"new/#"}})

	dev := dialClient(t, b.URL(), "hub-12")
	dev.publish("old/bed-1/files/x", []byte("left over"))
	dev.publish("new/bed-1/x", []byte("current"))
	eventually(t, "both messages recorded", func() bool {
		got, others := spooled(t, sp)
		return len(got) == 1 && len(others) == 1
	})
	_, others := spooled(t, sp)
	if it := others[0]; it.State != spool.StateRejected || it.Source != UnroutedSource || it.Size != int64(len("left over")) {
		t.Fatalf("unrouted message: state %s source %s size %d", it.State, it.Source, it.Size)
	}
}

// The way a device hub publishes a file: mosquitto_pub -f.
func TestFeedTakesFileFromMosquittoPub(t *testing.T) {
	b := mosquittotest.Start(t)
	sp := openSpool(t, t.TempDir())
	startAgent(t, b.URL(), "clinic-13", sp, FeedOptions{})
	payload := randomPayload(t, 300_000)
	file := filepath.Join(t.TempDir(), "report.pdf")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(b.Addr())
	out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-i", "hub-13",
		"-t", "devices/hub-a/files/report.pdf", "-f", file).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	eventually(t, "the file spooled", func() bool {
		got, _ := spooled(t, sp)
		return got[digest(payload)] != nil
	})
	got, _ := spooled(t, sp)
	if it := got[digest(payload)]; it.Size != int64(len(payload)) || it.Meta["topic_level_1"] != "hub-a" || it.Filename != "report.pdf" ||
		it.Meta[MetaDevice] != "hub-a" || it.Meta[MetaFeed] != "devices/+/files/#" {
		t.Fatalf("item: size %d meta %v filename %q", it.Size, it.Meta, it.Filename)
	}
}

// TestFeedDeviceFileNameAndEmptyPayload: the '+' levels name the device, what '#'
// matched is the (private) file name and never lands in Meta, and an empty payload
// is recorded as rejected with its reason instead of becoming a 0-byte file.
func TestFeedDeviceFileNameAndEmptyPayload(t *testing.T) {
	b := mosquittotest.Start(t)
	sp := openSpool(t, t.TempDir())
	startAgent(t, b.URL(), "clinic-14", sp, FeedOptions{Topics: []string{"site/+/dev/+/files/#"}})
	dev := dialClient(t, b.URL(), "hub-14")
	dev.publish("site/north/dev/ecg-3/files/ecg/ROE_RICHARD_19550505.hl7", []byte("MSH|x"))
	dev.publish("site/north/dev/ecg-3/files/empty.bin", nil)
	eventually(t, "both messages recorded", func() bool {
		got, others := spooled(t, sp)
		return len(got) == 1 && len(others) == 1
	})
	got, others := spooled(t, sp)
	for _, it := range got {
		if it.Meta[MetaDevice] != "north/ecg-3" || it.Meta[MetaFeed] != "site/+/dev/+/files/#" || it.Filename != "ecg/ROE_RICHARD_19550505.hl7" {
			t.Errorf("item: meta %v filename %q", it.Meta, it.Filename)
		}
		for k, v := range it.Meta {
			if strings.Contains(v, "ROE") {
				t.Errorf("meta %s carries the file name: %q", k, v)
			}
		}
	}
	if it := others[0]; it.State != spool.StateRejected || it.Size != 0 || !strings.Contains(it.Reason, "empty payload") {
		t.Errorf("empty message: state %s size %d reason %q", it.State, it.Size, it.Reason)
	}
}
