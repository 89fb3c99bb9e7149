package events

import "context"

// Sink is somewhere events go: the JSON-lines file, the MQTT broker.
// Publish returns nil only once the event is durably accepted (file fsynced,
// broker PUBACK); only then is the outbox row marked published.
type Sink interface {
	Name() string // outbox sink name: "file", "mqtt"
	Publish(ctx context.Context, id string, payload []byte) error
}

// BatchSink is a Sink that can keep several events in flight at once. The
// errors returned are one per event, in order; nil means accepted. Events of one
// item must be reported in order: once one fails, its later ones fail too.
type BatchSink interface {
	Sink
	PublishBatch(ctx context.Context, ids []string, payloads [][]byte) []error
}
