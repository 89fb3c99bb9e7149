package mqtt

import (
	"context"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// ConfigTopic is where central IT publishes (retained) the agent's own signed config.
func ConfigTopic(agentID string) string { return "courier/" + agentID + "/config" }

// GroupConfigTopic is where central IT publishes (retained) a group's signed config.
func GroupConfigTopic(group string) string { return "courier/groups/" + group + "/config" }

// ConfigStatusTopic is where the agent reports (retained) what it did with its config.
func ConfigStatusTopic(agentID string) string { return "courier/" + agentID + "/config/status" }

// Subscribe routes messages on the given filters (QoS 1) to handle and subscribes on
// every connect. A message is acknowledged only after handle returned, so one that was
// being handled when the agent died is delivered again. Call before Start.
func (c *Conn) Subscribe(filters []string, handle func(ctx context.Context, topic string, payload []byte)) {
	for _, f := range filters {
		c.client.AddRoute(f, func(_ paho.Client, m paho.Message) {
			c.run(func(ctx context.Context) {
				handle(ctx, m.Topic(), m.Payload())
				m.Ack()
			})
		})
	}
	c.OnConnect(func(ctx context.Context) {
		subs := make(map[string]byte, len(filters))
		for _, f := range filters {
			subs[f] = 1
		}
		tok := c.client.SubscribeMultiple(subs, nil)
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return
		}
		if err := tok.Error(); err != nil {
			c.log.Warn("mqtt subscribe failed; will retry at next connect", "err", err)
		}
	})
}

// Publish sends one QoS 1 message and returns once the broker acknowledged it.
func (c *Conn) Publish(ctx context.Context, topic string, retained bool, payload []byte) error {
	return c.publish(ctx, topic, retained, payload)
}
