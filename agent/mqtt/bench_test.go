package mqtt

import (
	"context"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgecourier/courier/internal/mosquittotest"
	"github.com/edgecourier/courier/spool"
)

// BenchmarkFeedIntake measures MQTT intake of 1 KiB messages into a real spool (each
// one fsynced and committed before its PUBACK) from a real Mosquitto, reported as
// messages durably spooled per second. The device publishes with QoS 1 as fast as the
// broker takes it; the clock stops when the spool holds every message.
//
//	go test ./agent/mqtt/ -run '^$' -bench FeedIntake -benchtime 2000x
func BenchmarkFeedIntake(b *testing.B) {
	// Mosquitto queues at most 1000 messages per session by default and drops the rest
	// (max_queued_messages); a device publishing faster than the spool takes them
	// would overflow it. Production brokers feeding Courier need the same setting.
	br := mosquittotest.Start(b, mosquittotest.WithConfig("max_queued_messages 0"))
	dir := b.TempDir()
	sp, err := spool.Open(context.Background(), spool.Options{Dir: dir, Sinks: []string{"mqtt"}})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	c, err := New(Options{Broker: br.URL(), AgentID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	f, err := NewFeed(c, sp, FeedOptions{Name: "bench", Topics: []string{"devices/+/files/#"}, QoS: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.WaitSubscribed(ctx); err != nil {
		b.Fatal(err)
	}
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(br.URL()).SetClientID("bench-hub").SetCleanSession(true))
	if tok := dev.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer dev.Disconnect(100)

	payloads := make([][]byte, b.N)
	for i := range payloads {
		payloads[i] = randomPayload(b, 1024)
	}
	b.SetBytes(1024)
	b.ResetTimer()
	start := time.Now()
	toks := make([]paho.Token, 0, b.N)
	for i, p := range payloads {
		toks = append(toks, dev.Publish(fmt.Sprintf("devices/bed-%d/files/%d", i%16, i), 1, false, p))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
	}
	last, lastChange := -1, time.Now()
	for {
		n, err := sp.Counts(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		got := n.ByState[spool.StateReceived]
		if got >= b.N {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > time.Minute {
			b.Fatalf("stuck at %d of %d spooled", got, b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}
