package mqtt

// DefaultMaxPayload is the configuration's default for an MQTT feed's
// max_payload (sources[i].max_payload); FeedOptions.MaxPayload 0 means no limit.
const DefaultMaxPayload = 64 << 20
