package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgecourier/courier/agent/events"
	"github.com/edgecourier/courier/internal/mosquittotest"
)

var _ events.Sink = (*EventSink)(nil)

func startConn(t *testing.T, opts Options, setup ...func(*Conn)) *Conn {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(c)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// persistentSubscriber is an event consumer with its own persistent session, so it
// misses nothing across a broker restart.
func persistentSubscriber(t *testing.T, broker, id, topic string) *collector {
	t.Helper()
	col := &collector{}
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetOrderMatters(false)
	o.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(topic, 1, nil)
	})
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		col.mu.Lock()
		col.msgs = append(col.msgs, m)
		col.mu.Unlock()
	})
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if tok := c.Subscribe(topic, 1, nil); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return col
}

func eventIDs(col *collector) map[string]bool {
	ids := map[string]bool{}
	for _, m := range col.snapshot() {
		var ev struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m.Payload(), &ev) == nil {
			ids[ev.ID] = true
		}
	}
	return ids
}

// TestEventSinkAcrossBrokerRestart publishes 200 events like the outbox does (retry
// every event until Publish returns nil) while the broker restarts. Every event must
// reach a subscriber; ids may repeat, distinct ids must equal the events sent.
func TestEventSinkAcrossBrokerRestart(t *testing.T) {
	b := mosquittotest.Start(t)
	conn := startConn(t, testOptions(t, b.URL(), "clinic-6"))
	sink := NewEventSink(conn, 16)
	col := persistentSubscriber(t, b.URL(), "consumer-6", EventsTopic("clinic-6"))

	const n = 200
	var acked atomic.Int64
	var untrusted atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 8 { // eight outbox workers, like a window of events in flight
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				id := fmt.Sprintf("0193b0c2-0000-7000-8000-%012d.verified", i)
				payload, _ := json.Marshal(map[string]string{"specversion": "1.0", "id": id})
				for {
					err := sink.Publish(ctx, id, payload)
					if err == nil {
						break
					}
					if errors.Is(err, errUntrusted) {
						untrusted.Add(1)
					}
					if ctx.Err() != nil {
						t.Errorf("event %s never published: %v", id, err)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				acked.Add(1)
			}
		}()
	}
	eventually(t, "50 events acknowledged", func() bool { return acked.Load() >= 50 })
	b.Restart()
	wg.Wait()
	eventually(t, "all 200 distinct event ids at the subscriber", func() bool { return len(eventIDs(col)) == n })
	t.Logf("%d messages for %d ids; %d publishes not trusted after a reconnect", len(col.snapshot()), n, untrusted.Load())
}

func TestPublishBatchKeepsItemOrder(t *testing.T) {
	b := mosquittotest.Start(t)
	conn := startConn(t, testOptions(t, b.URL(), "clinic-7"))
	sink := NewEventSink(conn, 4)
	dev := dialClient(t, b.URL(), "consumer-7")
	col := dev.subscribe(EventsTopic("clinic-7"))

	var evs []Event
	for i := range 20 {
		id := fmt.Sprintf("item-%d.verified", i)
		evs = append(evs, Event{ID: id, Payload: []byte(`{"id":"` + id + `"}`)})
	}
	for i, err := range sink.PublishBatch(context.Background(), evs) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	eventually(t, "20 events", func() bool { return len(col.snapshot()) == 20 })
	for i, m := range col.snapshot() {
		if want := `{"id":"item-` + fmt.Sprint(i) + `.verified"}`; string(m.Payload()) != want {
			t.Fatalf("message %d: %s, want %s", i, m.Payload(), want)
		}
	}

	// A failed event fails the later events of its item, not those of other items.
	errs := orderPerItem([]Event{{ID: "a.rejected"}, {ID: "b.verified"}, {ID: "a.duplicate"}},
		[]error{errors.New("no PUBACK"), nil, nil})
	if errs[0] == nil || errs[1] != nil || !errors.Is(errs[2], errEarlierFailed) {
		t.Fatalf("orderPerItem: %v", errs)
	}

	// Down broker: errors, never success.
	b.Stop()
	eventually(t, "connection loss noticed", func() bool { return !conn.Connected() })
	if err := sink.Publish(context.Background(), "x.verified", []byte("{}")); err == nil {
		t.Fatal("publish succeeded with the broker down")
	}
}

func TestStatusRetainedAndWill(t *testing.T) {
	b := mosquittotest.Start(t)
	var calls atomic.Int64
	report := func(context.Context) (any, error) {
		calls.Add(1)
		return Status{State: "online", Version: "test", Counts: map[string]int{"received": 3}, Time: time.Now().UTC()}, nil
	}
	var sp *StatusPublisher
	conn := startConn(t, testOptions(t, b.URL(), "clinic-8"), func(c *Conn) {
		sp = NewStatusPublisher(c, 100*time.Millisecond, report)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- sp.Run(ctx) }()

	statusOf := func(id string) map[string]any {
		dev := dialClient(t, b.URL(), id)
		col := dev.subscribe(StatusTopic("clinic-8"))
		eventually(t, "retained status", func() bool { return len(col.snapshot()) > 0 })
		m := col.snapshot()[0]
		if !m.Retained() {
			t.Fatalf("status not retained: %s", m.Payload())
		}
		var v map[string]any
		if err := json.Unmarshal(m.Payload(), &v); err != nil {
			t.Fatalf("status %q: %v", m.Payload(), err)
		}
		return v
	}
	eventually(t, "a few status publishes", func() bool { return calls.Load() >= 3 })
	if v := statusOf("late-subscriber"); v["state"] != "online" || v["version"] != "test" {
		t.Fatalf("status: %v", v)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v := statusOf("after-stop"); v["state"] != "offline" || v["agent"] != "clinic-8" || v["at"] == nil {
		t.Fatalf("after a clean stop: %v", v)
	}
	_ = conn

	// The broker publishes the will when an agent process dies holding the connection.
	dev := dialClient(t, b.URL(), "will-watcher")
	col := dev.subscribe(StatusTopic("clinic-9"))
	child := startChild(t, "conn", "CHILD_BROKER="+b.URL(), "CHILD_AGENT=clinic-9")
	killChild(t, child)
	eventually(t, "last will", func() bool {
		for _, m := range col.snapshot() {
			var v Offline
			if json.Unmarshal(m.Payload(), &v) == nil && v.State == "offline" && v.Agent == "clinic-9" && !v.At.IsZero() {
				return true
			}
		}
		return false
	})
}

func TestBrokerRefusesCredentials(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.WithUser("clinic-10", "right"))
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t, b.URL(), "clinic-10")
	opts.Username, opts.PasswordFile = "clinic-10", pw
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, "the refusal recorded", func() bool { return c.LastError() != nil })
	if c.Connected() || returnCode(c.LastError()) != 4 && returnCode(c.LastError()) != 5 {
		t.Fatalf("connected %v, last error %v (code %d)", c.Connected(), c.LastError(), returnCode(c.LastError()))
	}
	c.Close()

	if err := os.WriteFile(pw, []byte("right\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := startConn(t, opts)
	if good.LastError() != nil {
		t.Fatalf("connected with last error %v", good.LastError())
	}
}

func TestTLSWithClientCertificate(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.WithTLS(true))
	crt, key := b.ClientCert(t, "clinic-11")
	opts := testOptions(t, b.URL(), "clinic-11")
	opts.TLS = TLSOptions{CAFile: b.CAFile, ClientCert: crt, ClientKey: key}
	conn := startConn(t, opts)
	// A publish handed over while paho still resends its store after CONNACK is not
	// trusted (errUntrusted) and is sent again, as the outbox does.
	var err error
	for i := 0; i < 3; i++ {
		if err = NewEventSink(conn, 1).Publish(context.Background(), "x.verified", []byte(`{}`)); !errors.Is(err, errUntrusted) {
			break
		}
	}
	if err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{
		{Broker: "tcp://127.0.0.1:1", AgentID: ""},
		{Broker: "tcp://127.0.0.1:1", AgentID: "a/b"},
		{Broker: "http://127.0.0.1:1", AgentID: "a"},
		{Broker: "127.0.0.1:1883", AgentID: "a"},
		{Broker: "tcp://127.0.0.1:1", AgentID: "a", PasswordFile: "/nonexistent/pw"},
		{Broker: "ssl://127.0.0.1:1", AgentID: "a", TLS: TLSOptions{ClientCert: "x"}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v): want an error", o)
		}
	}
}
