package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/mosquittotest"
	"github.com/edgecourier/courier/internal/testutil"
)

// subscriber runs mosquitto_sub, as a central system would, and keeps every line.
type subscriber struct {
	mu     sync.Mutex
	lines  []string
	probes int // probe messages seen (see mosquittoSub)
}

func mosquittoSub(t *testing.T, b *mosquittotest.Broker, topic string, retained bool) *subscriber {
	t.Helper()
	host, port, _ := strings.Cut(b.Addr(), ":")
	args := []string{"-h", host, "-p", port, "-t", topic, "-q", "1", "-i", fmt.Sprintf("e2e-sub-%d", time.Now().UnixNano())}
	if !retained {
		args = append(args, "-R")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "mosquitto_sub", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	s := &subscriber{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			s.mu.Lock()
			if strings.HasPrefix(sc.Text(), probePrefix) {
				s.probes++
			} else {
				s.lines = append(s.lines, sc.Text())
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); cmd.Wait(); <-done })
	// The subscription is in place once a probe published after it comes back.
	probeTopic := strings.NewReplacer("+", "e2e-probe", "#", "e2e-probe").Replace(topic)
	for round := 0; ; round++ {
		if round == 20 {
			t.Fatalf("mosquitto_sub on %s: no probe came back in 20 tries", topic)
		}
		mosquittoPub(t, b, probeTopic, []byte(fmt.Sprintf("%s%d", probePrefix, round)))
		seen := false
		for range 20 {
			s.mu.Lock()
			seen = s.probes > 0
			s.mu.Unlock()
			if seen {
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		if seen {
			break
		}
	}
	return s
}

// probePrefix marks the probe messages mosquittoSub sends itself; they are not lines.
const probePrefix = "courier-e2e-probe-"

func (s *subscriber) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

func mosquittoPub(t *testing.T, b *mosquittotest.Broker, topic string, payload []byte) {
	t.Helper()
	host, port, _ := strings.Cut(b.Addr(), ":")
	cmd := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-t", topic, "-q", "1", "-s")
	cmd.Stdin = bytes.NewReader(payload)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
}

// TestDeviceHubOverMQTT is issue 4's promise: a device hub publishes files with
// mosquitto_pub; their verified events can be read with mosquitto_sub. Files
// published while the agent is down arrive after it returns.
func TestDeviceHubOverMQTT(t *testing.T) {
	b := mosquittotest.Start(t)
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url(), Sources: `  - name: bedside
    kind: mqtt
    topics: ["devices/+/files/#"]
    max_payload: 64KiB
    priority: high
`, Extra: fmt.Sprintf("mqtt:\n  broker: %s\n", b.URL())})
	// events.mqtt on (the file sink stays on too).
	cfg := strings.Replace(string(mustRead(t, e.cfgPath)), "events:\n", "events:\n  mqtt: true\n", 1)
	writeText(t, e.cfgPath, cfg)
	if out, code := e.courier("config", "validate", e.cfgPath); code != 0 {
		t.Fatalf("config: %s", out)
	}
	sub := mosquittoSub(t, b, "courier/+/events", false)
	a := e.startAgent()

	status := mosquittoSub(t, b, "courier/e2e-agent/status", true)
	testutil.WaitFor(t, time.Minute, "a retained online status", func() bool {
		for _, l := range status.snapshot() {
			if strings.Contains(l, `"state":"online"`) {
				return true
			}
		}
		return false
	})

	payloads := map[string][]byte{}
	for i := 0; i < 10; i++ {
		p := randBytes(1000+i, byte(100+i))
		payloads[sum(p)] = p
		mosquittoPub(t, b, fmt.Sprintf("devices/bed-%d/files/ecg", i), p)
	}
	mosquittoPub(t, b, "devices/bed-x/files/huge", randBytes(100<<10, 1)) // over max_payload
	testutil.WaitFor(t, 2*time.Minute, "verified events on MQTT for 10 device files", func() bool {
		return len(verifiedOn(t, sub.snapshot())) >= 10
	})

	// Down for a while: the broker keeps what devices publish for our session.
	a.kill()
	for i := 0; i < 5; i++ {
		p := randBytes(2000+i, byte(200+i))
		payloads[sum(p)] = p
		mosquittoPub(t, b, fmt.Sprintf("devices/bed-%d/files/late", i), p)
	}
	testutil.WaitFor(t, time.Minute, "the broker to publish the agent's last will", func() bool {
		s := status.snapshot()
		return len(s) > 0 && strings.Contains(s[len(s)-1], `"offline"`)
	})
	e.startAgent()
	testutil.WaitFor(t, 2*time.Minute, "all 15 device files verified", func() bool {
		return len(verifiedOn(t, sub.snapshot())) >= 15
	})
	got := verifiedOn(t, sub.snapshot())
	for d, p := range payloads {
		ev, ok := got[d]
		if !ok {
			t.Errorf("payload %.12s: no verified event on MQTT", d)
			continue
		}
		if stored := in.object(t, ev.Data.FileID); !bytes.Equal(stored, p) {
			t.Errorf("payload %.12s: bytes at the server differ", d)
		}
	}
	rejected := 0
	for _, l := range sub.snapshot() {
		if strings.Contains(l, "files/ecg") || strings.Contains(l, "files/late") || strings.Contains(l, `"topic"`) {
			t.Errorf("an event carries the device's topic (its last level is a file name): %s", l)
		}
		if strings.Contains(l, "org.edgecourier.file.rejected.v1") {
			rejected++
		}
	}
	if rejected == 0 {
		t.Errorf("the oversized payload produced no rejected event on MQTT")
	}
	if n := len(in.objects(t)); n != 15 {
		t.Errorf("server holds %d objects, want 15", n)
	}

	// A downstream system lost its copy: replay the last hour, same ids again.
	before := len(sub.snapshot())
	out, code := e.courier("events", "replay", "--config", e.cfgPath, "--since", "1h")
	if code != 0 {
		t.Fatalf("events replay: exit %d\n%s", code, out)
	}
	testutil.WaitFor(t, time.Minute, "replayed events on MQTT", func() bool {
		return len(verifiedOn(t, sub.snapshot()[before:])) >= 15
	})
	replayed := verifiedOn(t, sub.snapshot()[before:])
	for d, ev := range got {
		if replayed[d].ID != ev.ID {
			t.Errorf("replayed event for %.12s has id %q, want the original %q", d, replayed[d].ID, ev.ID)
		}
	}
}

func verifiedOn(t *testing.T, lines []string) map[string]event {
	out := map[string]event{}
	for _, l := range lines {
		var ev event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("event on MQTT is not JSON: %q", l)
		}
		if ev.Type == "org.edgecourier.file.verified.v1" {
			out[ev.Data.SHA256] = ev
		}
	}
	return out
}
