package mqtt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Event is one outbox event for PublishBatch.
type Event struct {
	ID      string // CloudEvent id, "<file-id>.<type>"
	Payload []byte // the CloudEvent JSON
}

// EventSink publishes events to courier/<agent-id>/events with QoS 1, not retained.
// It implements events.Sink. Publish is safe for concurrent use; at most window
// publishes wait for their PUBACK at once.
type EventSink struct {
	conn  *Conn
	topic string
	sem   chan struct{}
}

// NewEventSink makes the sink; window bounds the events in flight (0 = 32).
func NewEventSink(c *Conn, window int) *EventSink {
	if window <= 0 {
		window = 32
	}
	return &EventSink{conn: c, topic: EventsTopic(c.opts.AgentID), sem: make(chan struct{}, window)}
}

// Name is the outbox sink name.
func (s *EventSink) Name() string { return "mqtt" }

// Publish sends one event and returns nil only once the broker acknowledged it on a
// connection that stayed up meanwhile. Any error means: not known to be published,
// send it again later (consumers drop ids they have seen).
func (s *EventSink) Publish(ctx context.Context, id string, payload []byte) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.sem }()
	if err := s.conn.publish(ctx, s.topic, false, payload); err != nil {
		return fmt.Errorf("mqtt sink: publish event %s: %w", id, err)
	}
	return nil
}

// errEarlierFailed marks an event whose predecessor of the same item was not
// acknowledged: reporting it published would let it overtake that one on retry.
var errEarlierFailed = errors.New("an earlier event of the same item was not published")

// PublishBatch publishes evs concurrently (within the window), handing them to paho in
// the given order, and returns one error per event (nil = acknowledged). Events of one
// item (same id before the last '.') stay in order: once one of them fails, the later
// ones of that item are reported failed too, so the caller resends them in order.
func (s *EventSink) PublishBatch(ctx context.Context, evs []Event) []error {
	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	for i, ev := range evs {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			for j := i; j < len(evs); j++ {
				errs[j] = ctx.Err()
			}
			wg.Wait()
			return orderPerItem(evs, errs)
		}
		// Hand the message to paho on this goroutine so the broker sees the batch in
		// order; only the wait for its PUBACK runs concurrently.
		wait := s.conn.publishAsync(s.topic, false, ev.Payload)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.sem }()
			if err := wait(ctx); err != nil {
				errs[i] = fmt.Errorf("mqtt sink: publish event %s: %w", ev.ID, err)
			}
		}()
	}
	wg.Wait()
	return orderPerItem(evs, errs)
}

func orderPerItem(evs []Event, errs []error) []error {
	failed := map[string]bool{}
	for i, ev := range evs {
		item := ev.ID
		if j := strings.LastIndexByte(item, '.'); j > 0 {
			item = item[:j]
		}
		if failed[item] && errs[i] == nil {
			errs[i] = fmt.Errorf("mqtt sink: publish event %s: %w", ev.ID, errEarlierFailed)
		}
		if errs[i] != nil {
			failed[item] = true
		}
	}
	return errs
}
