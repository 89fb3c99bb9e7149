package mqtt

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/edgecourier/courier/spool"
)

// Child processes: the test binary re-executed with childEnv set runs an agent-like
// process (a Conn with a feed into a real spool) until it is killed.
const childEnv = "COURIER_MQTT_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		// paho's Disconnect may return before its own goroutine has finished
		// (documented in client.go); that one ends on its own after the quiesce.
		goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Disconnect.func1"))
	case "feed":
		os.Exit(runChild(true))
	case "conn":
		os.Exit(runChild(false))
	default:
		os.Exit(3)
	}
}

// runChild connects as agent CHILD_AGENT to CHILD_BROKER, with a feed on CHILD_TOPIC
// into the spool in CHILD_SPOOL when feed is set; it prints "connected" once up.
func runChild(feed bool) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(Options{Broker: os.Getenv("CHILD_BROKER"), AgentID: os.Getenv("CHILD_AGENT"), Logger: log,
		MaxReconnectInterval: time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	feedReady := func(context.Context) error { return nil }
	if feed {
		sp, err := spool.Open(ctx, spool.Options{Dir: os.Getenv("CHILD_SPOOL"), Sinks: []string{"mqtt"}, Logger: log})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer sp.Close()
		f, err := NewFeed(c, sp, FeedOptions{Name: "bedside", Topics: []string{os.Getenv("CHILD_TOPIC")}, QoS: 1})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		feedReady = f.WaitSubscribed
	}
	if err := c.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	if err := c.WaitConnected(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := feedReady(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("connected")
	<-ctx.Done()
	return 0
}

// startChild runs a child and waits until it printed "connected".
func startChild(t *testing.T, mode string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + mode}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		// Reads until the child's stdout closes (it exits or is killed).
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if sc.Text() == "connected" && !signalled {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child %s did not connect", mode)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// killChild SIGKILLs a child and reaps it.
func killChild(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	_ = cmd.Wait()
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testOptions(t *testing.T, broker, agent string) Options {
	return Options{Broker: broker, AgentID: agent, Logger: testLogger(t), MaxReconnectInterval: time.Second,
		PublishTimeout: 10 * time.Second}
}

func openSpool(t *testing.T, dir string, opts ...func(*spool.Options)) *spool.Spool {
	t.Helper()
	o := spool.Options{Dir: dir, Sinks: []string{"mqtt"}, Logger: testLogger(t)}
	for _, f := range opts {
		f(&o)
	}
	sp, err := spool.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// client is a plain device-hub or consumer connection (clean session) for tests.
type client struct {
	t *testing.T
	c paho.Client
}

func dialClient(t *testing.T, broker, id string) *client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("test client %s connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &client{t: t, c: c}
}

func (c *client) publish(topic string, payload []byte) {
	c.t.Helper()
	tok := c.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		c.t.Fatalf("test publish to %s: %v", topic, tok.Error())
	}
}

// collector subscribes and records every message.
type collector struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (c *client) subscribe(topic string) *collector {
	c.t.Helper()
	col := &collector{}
	tok := c.c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		col.mu.Lock()
		col.msgs = append(col.msgs, m)
		col.mu.Unlock()
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		c.t.Fatalf("test subscribe %s: %v", topic, tok.Error())
	}
	return col
}

func (col *collector) snapshot() []paho.Message {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]paho.Message(nil), col.msgs...)
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// spooled lists the items of the spool by state and checks that every stored item's
// bytes hash to its recorded SHA-256.
func spooled(t *testing.T, sp *spool.Spool) (received map[string]*spool.Item, others []*spool.Item) {
	t.Helper()
	items, err := sp.List(context.Background(), spool.ListFilter{})
	if err != nil {
		t.Fatalf("list spool: %v", err)
	}
	received = map[string]*spool.Item{}
	for _, it := range items {
		if it.State != spool.StateReceived {
			others = append(others, it)
			continue
		}
		b, err := os.ReadFile(sp.ContentPath(it.ID))
		if err != nil {
			t.Fatalf("read item %s: %v", it.ID, err)
		}
		if digest(b) != it.SHA256 {
			t.Fatalf("item %s: stored bytes hash to %s, recorded %s", it.ID, digest(b), it.SHA256)
		}
		if prev, dup := received[it.SHA256]; dup {
			t.Fatalf("payload %s spooled twice: items %s and %s", it.SHA256, prev.ID, it.ID)
		}
		received[it.SHA256] = it
	}
	return received, others
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
