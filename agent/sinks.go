package agent

import (
	"context"
	"log/slog"

	"github.com/edgecourier/courier/agent/events"
	"github.com/edgecourier/courier/agent/mqtt"
)

// batchSink lets the publisher keep a window of MQTT events in flight.
type batchSink struct{ *mqtt.EventSink }

func (b batchSink) PublishBatch(ctx context.Context, ids []string, payloads [][]byte) []error {
	evs := make([]mqtt.Event, len(ids))
	for i := range ids {
		evs[i] = mqtt.Event{ID: ids[i], Payload: payloads[i]}
	}
	return b.EventSink.PublishBatch(ctx, evs)
}

var _ events.BatchSink = batchSink{}

// logSink stands in when no event consumer is configured: it logs the event id
// (never the body) so that items still finish and leave the spool.
type logSink struct{ log *slog.Logger }

func (logSink) Name() string { return "log" }

func (l logSink) Publish(ctx context.Context, id string, payload []byte) error {
	l.log.Info("event (no sink configured)", "id", id, "bytes", len(payload))
	return nil
}
