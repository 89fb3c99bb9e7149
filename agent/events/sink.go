package events

import "context"

// Sink is somewhere events go: the JSON-lines file, the MQTT broker.
// Publish returns nil only once the event is durably accepted (file fsynced,
// broker PUBACK); only then is the outbox row marked published.
type Sink interface {
	Name() string // outbox sink name: "file", "mqtt"
	Publish(ctx context.Context, id string, payload []byte) error
}
