package mqtt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgecourier/courier/spool"
)

// Receiver is the part of the spool a feed needs.
type Receiver interface {
	Receive(ctx context.Context, in spool.Intake, r io.Reader) (*spool.Item, error)
	Reject(ctx context.Context, in spool.Intake, size int64, reason string) (*spool.Item, error)
}

// FeedOptions configure one `kind: mqtt` source.
type FeedOptions struct {
	Name       string   // source name
	Topics     []string // subscription filters, e.g. devices/+/files/#
	QoS        byte     // 1 (0 would mean the broker does not keep messages for us)
	MaxPayload int64    // 0 = no limit; larger messages are rejected and acknowledged
	Priority   spool.Priority
	NoInspect  bool // hl7: off — payloads are not read as HL7

	// RetryInitial and RetryMax bound the backoff while the spool is full [1s, 30s].
	RetryInitial, RetryMax time.Duration
}

// Feed takes the messages of one mqtt source into the spool. One message is one file.
//
// A message is acknowledged only after the spool returned it durable (or recorded it
// as a duplicate or a rejection). When the spool is full the message's handler keeps
// it unacknowledged and retries with backoff: paho (order off) runs each message in
// its own goroutine, and the broker stops sending once its in-flight window of
// unacknowledged messages (Mosquitto: max_inflight_messages, 20) is used, so the rest
// waits safely in the broker's session. On shutdown held messages are left
// unacknowledged and the broker redelivers them at the next connect.
//
// A redelivery (DUP) of a message this process holds or has just spooled is
// recognised by topic and SHA-256 and acknowledged without a second Receive; any
// other repeat is caught by the spool's dedupe (same source, same SHA-256).
type Feed struct {
	conn *Conn
	sp   Receiver
	opts FeedOptions
	log  *slog.Logger

	mu       sync.Mutex
	inflight map[string]*flight // topic\x00sha256 → the handler holding it
	recent   map[string]struct{}
	order    []string // recent, oldest first, bounded
	full     bool     // logging once per change

	subOnce    sync.Once
	subscribed chan struct{} // closed after the first successful SUBSCRIBE
}

type flight struct {
	done chan struct{}
	ok   bool // set before done is closed
}

const recentMax = 1024

// NewFeed registers a feed on c. It must be called before c.Start so that messages
// the broker queued for our session find their route immediately after connect.
func NewFeed(c *Conn, sp Receiver, opts FeedOptions) (*Feed, error) {
	if opts.Name == "" {
		return nil, errors.New("mqtt feed: name must not be empty")
	}
	if len(opts.Topics) == 0 {
		return nil, fmt.Errorf("sources %s: topics: must not be empty", opts.Name)
	}
	for _, t := range opts.Topics {
		if err := validFilter(t); err != nil {
			return nil, fmt.Errorf("sources %s: topics %q: %w", opts.Name, t, err)
		}
	}
	if opts.QoS > 2 {
		return nil, fmt.Errorf("sources %s: qos: must be 0, 1 or 2, got %d", opts.Name, opts.QoS)
	}
	if opts.RetryInitial <= 0 {
		opts.RetryInitial = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 30 * time.Second
	}
	f := &Feed{conn: c, sp: sp, opts: opts, inflight: map[string]*flight{}, recent: map[string]struct{}{},
		subscribed: make(chan struct{}), log: c.log.With("source", opts.Name)}
	for _, t := range opts.Topics {
		c.client.AddRoute(t, f.handle)
	}
	c.OnConnect(f.subscribe)
	c.mu.Lock()
	if c.unrouted == nil {
		c.unrouted = sp
	}
	c.mu.Unlock()
	return f, nil
}

func validFilter(t string) error {
	if t == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(t, "/")
	for i, l := range levels {
		if l == "#" && i != len(levels)-1 {
			return errors.New("'#' must be the last level")
		}
		if l != "#" && l != "+" && strings.ContainsAny(l, "+#") {
			return errors.New("'+' and '#' must fill a whole level")
		}
	}
	return nil
}

// subscribe runs on every connect: the session normally keeps our subscriptions, but
// a broker that lost its state (or a new topic in the config) needs them again.
func (f *Feed) subscribe(ctx context.Context) {
	filters := make(map[string]byte, len(f.opts.Topics))
	for _, t := range f.opts.Topics {
		filters[t] = f.opts.QoS
	}
	tok := f.conn.client.SubscribeMultiple(filters, nil)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return
	}
	if err := tok.Error(); err != nil {
		f.log.Warn("mqtt subscribe failed; will retry at next connect", "err", err)
		return
	}
	refused := false
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for t, q := range st.Result() {
			if q == 0x80 {
				refused = true
				f.log.Error("mqtt broker refused the subscription: check the broker's ACL for this agent", "topic_filter", t)
			}
		}
	}
	if !refused {
		f.subOnce.Do(func() { close(f.subscribed) })
	}
}

// WaitSubscribed blocks until the broker granted the feed's subscriptions once
// (from then on the persistent session queues its messages) or ctx ends.
func (f *Feed) WaitSubscribed(ctx context.Context) error {
	select {
	case <-f.subscribed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt feed %s: wait for subscription: %w", f.opts.Name, ctx.Err())
	}
}

// handle is paho's callback for one message, on a goroutine of its own.
func (f *Feed) handle(_ paho.Client, m paho.Message) {
	f.conn.run(func(ctx context.Context) { f.take(ctx, m) })
}

func (f *Feed) take(ctx context.Context, m paho.Message) {
	payload := m.Payload()
	sum := sha256.Sum256(payload)
	key := m.Topic() + "\x00" + hex.EncodeToString(sum[:])

	f.mu.Lock()
	if _, ok := f.recent[key]; ok && m.Duplicate() {
		f.mu.Unlock()
		m.Ack()
		return
	}
	if fl, ok := f.inflight[key]; ok && m.Duplicate() {
		f.mu.Unlock()
		// The broker resent a message we still hold (our connection dropped meanwhile).
		// The first handler's ack went to a dead connection; this copy carries the
		// live packet id, so it acknowledges once the first one is durable.
		select {
		case <-fl.done:
			if fl.ok {
				m.Ack()
				return
			}
		case <-ctx.Done():
			return
		}
		f.mu.Lock()
	}
	fl := &flight{done: make(chan struct{})}
	if _, busy := f.inflight[key]; !busy {
		f.inflight[key] = fl
	}
	f.mu.Unlock()

	ok := f.store(ctx, m, payload)

	f.mu.Lock()
	fl.ok = ok
	close(fl.done)
	if f.inflight[key] == fl {
		delete(f.inflight, key)
	}
	if ok {
		f.remember(key)
	}
	f.mu.Unlock()
	if ok {
		m.Ack()
	}
}

// remember adds key to the bounded set of recently spooled messages. Caller holds f.mu.
func (f *Feed) remember(key string) {
	if _, ok := f.recent[key]; ok {
		return
	}
	f.recent[key] = struct{}{}
	f.order = append(f.order, key)
	if len(f.order) > recentMax {
		delete(f.recent, f.order[0])
		f.order = f.order[1:]
	}
}

// store hands the payload to the spool until it is durable, a duplicate or a recorded
// rejection (true), or ctx ends (false: leave it to the broker).
func (f *Feed) store(ctx context.Context, m paho.Message, payload []byte) bool {
	in := f.intake(m.Topic())
	size := int64(len(payload))
	wait := f.opts.RetryInitial
	for {
		var it *spool.Item
		var err error
		switch {
		case size == 0:
			it, err = f.reject(ctx, in, size, "empty payload: a message of 0 bytes carries no file (check the publisher)")
		case f.opts.MaxPayload > 0 && size > f.opts.MaxPayload:
			it, err = f.reject(ctx, in, size, f.tooLarge(size))
		default:
			it, err = f.sp.Receive(ctx, in, bytes.NewReader(payload))
			if errors.Is(err, spool.ErrTooLarge) {
				it, err = f.reject(ctx, in, size, f.tooLarge(size))
			}
		}
		if err == nil {
			f.setFull(false)
			f.log.Debug("mqtt message spooled", "id", it.ID, "state", it.State, "sha256", it.SHA256, "size", size)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, spool.ErrFull) {
			f.setFull(true)
		} else {
			f.log.Error("mqtt message not spooled; holding it unacknowledged and retrying", "size", size, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		wait = min(wait*2, f.opts.RetryMax)
	}
}

func (f *Feed) tooLarge(size int64) string {
	return fmt.Sprintf("payload of %d bytes exceeds max_payload %d", size, f.opts.MaxPayload)
}

func (f *Feed) reject(ctx context.Context, in spool.Intake, size int64, reason string) (*spool.Item, error) {
	it, err := f.sp.Reject(ctx, in, size, reason)
	if err == nil {
		f.log.Warn("mqtt message rejected", "id", it.ID, "size", size, "reason", reason)
	}
	return it, err
}

func (f *Feed) setFull(full bool) {
	f.mu.Lock()
	changed := f.full != full
	f.full = full
	f.mu.Unlock()
	if !changed {
		return
	}
	if full {
		f.log.Warn("spool full: holding mqtt messages unacknowledged, the broker keeps the rest")
	} else {
		f.log.Info("spool has room again: mqtt intake resumed")
	}
}

// intake describes a message for the spool. Meta names the device and the feed:
// "device" is the levels that matched the subscription's '+' joined by "/" (also kept
// one by one as topic_level_N, 0-based), "feed" is the subscription's filter; e.g.
// devices/+/files/# on devices/bed-7/files/ecg/x.hl7 gives device bed-7. What a '#'
// matched (ecg/x.hl7) is a file name: it goes to the private Filename, which events
// and upload metadata carry only as privacy.send_filenames allows. The whole topic
// stays in the private SourceRef.
func (f *Feed) intake(topic string) spool.Intake {
	meta := map[string]string{}
	levels := strings.Split(topic, "/")
	name := levels[len(levels)-1]
	for _, filter := range f.opts.Topics {
		if !matches(filter, levels) {
			continue
		}
		var device []string
		for i, l := range strings.Split(filter, "/") {
			switch l {
			case "+":
				meta["topic_level_"+strconv.Itoa(i)] = levels[i]
				device = append(device, levels[i])
			case "#":
				if rest := strings.Join(levels[i:], "/"); rest != "" {
					name = rest
				}
			}
		}
		if len(device) > 0 {
			meta[MetaDevice] = strings.Join(device, "/")
		}
		meta[MetaFeed] = filter
		break
	}
	return spool.Intake{
		Source:     f.opts.Name,
		SourceKind: "mqtt",
		SourceRef:  topic,
		Filename:   name,
		Priority:   f.opts.Priority,
		Meta:       meta,
		MaxSize:    f.opts.MaxPayload,
		NoInspect:  f.opts.NoInspect,
	}
}

// Meta keys a feed sets on its items (besides topic_level_N).
const (
	MetaDevice = "device" // the '+' levels of the feed's filter, joined by "/"
	MetaFeed   = "feed"   // the feed's topic filter that matched
)

// matches reports whether a topic (split in levels) matches filter (MQTT 3.1.1 4.7).
func matches(filter string, levels []string) bool {
	fl := strings.Split(filter, "/")
	for i, l := range fl {
		if l == "#" {
			return !(i == 0 && strings.HasPrefix(levels[0], "$"))
		}
		if i >= len(levels) {
			return false
		}
		if l == "+" {
			if i == 0 && strings.HasPrefix(levels[0], "$") {
				return false
			}
			continue
		}
		if l != levels[i] {
			return false
		}
	}
	return len(fl) == len(levels)
}

// UnroutedSource is the source name of messages that arrived on a topic no feed
// routes: a subscription an earlier config left in the broker's session.
const UnroutedSource = "mqtt-unrouted"

// onUnrouted records a message no feed routes as rejected and acknowledges it. Left
// unacknowledged it would use up the broker's in-flight window for our session and
// stall every feed; acknowledged silently it would be lost without a trace.
func (c *Conn) onUnrouted(_ paho.Client, m paho.Message) {
	c.run(func(ctx context.Context) {
		c.mu.Lock()
		sp := c.unrouted
		c.mu.Unlock()
		if sp == nil {
			c.log.Warn("mqtt message on a topic no feed routes and no spool to record it; left unacknowledged",
				"size", len(m.Payload()))
			return
		}
		in := spool.Intake{Source: UnroutedSource, SourceKind: "mqtt", SourceRef: m.Topic()}
		it, err := sp.Reject(ctx, in, int64(len(m.Payload())), "no mqtt source is configured for this topic")
		if err != nil {
			c.log.Error("mqtt message on an unrouted topic not recorded; left unacknowledged", "err", err)
			return
		}
		c.log.Warn("mqtt message on a topic no source is configured for: rejected (a subscription left in the broker session?)",
			"id", it.ID, "size", len(m.Payload()))
		m.Ack()
	})
}
