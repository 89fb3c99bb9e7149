package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/mqtt"
	"github.com/edgecourier/courier/spool"
)

// mqttParts is the broker connection with what hangs on it: the feeds of every
// kind: mqtt source and the status publisher. They share one persistent session,
// so a reload that changes any of them replaces them together; messages held
// meanwhile stay unacknowledged in the broker's session and come again.
type mqttParts struct {
	c      *mqtt.Conn
	status *mqtt.StatusPublisher
	feeds  []*mqtt.Feed
}

func (a *Agent) buildMQTT(cfg *config.Config) (*mqttParts, error) {
	if cfg.MQTT.Broker == "" {
		return nil, nil
	}
	conn, err := mqtt.New(MQTTOptions(cfg, a.log))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	a.subscribeConfig(conn, cfg)
	return &mqttParts{c: conn}, nil
}

// addFeeds registers a feed for every kind: mqtt source; before start.
func (m *mqttParts) addFeeds(cfg *config.Config, sp *spool.Spool) error {
	for i, sc := range cfg.Sources {
		if sc.Kind != "mqtt" {
			continue
		}
		prio, _ := spool.ParsePriority(sc.Priority)
		f, err := mqtt.NewFeed(m.c, sp, mqtt.FeedOptions{
			Name: sc.Name, Topics: sc.Topics, QoS: byte(*sc.QoS), MaxPayload: int64(sc.MaxPayload), Priority: prio,
			NoInspect: sc.HL7 == "off",
		})
		if err != nil {
			return fmt.Errorf("%s: sources[%d]: %w", cfg.File, i, err)
		}
		m.feeds = append(m.feeds, f)
	}
	return nil
}

// conn is the connection, nil when no broker is configured.
func (m *mqttParts) conn() *mqtt.Conn {
	if m == nil {
		return nil
	}
	return m.c
}

func (m *mqttParts) start(ctx context.Context) error {
	if m == nil {
		return nil
	}
	return m.c.Start(ctx)
}

func (m *mqttParts) close() {
	if m != nil {
		m.c.Close()
	}
}

// MQTTOptions maps the config's mqtt section.
func MQTTOptions(cfg *config.Config, log *slog.Logger) mqtt.Options {
	return mqtt.Options{
		Broker:       cfg.MQTT.Broker,
		Username:     cfg.MQTT.Username,
		PasswordFile: cfg.MQTT.PasswordFile,
		TLS:          mqtt.TLSOptions{CAFile: cfg.MQTT.TLS.CAFile, ClientCert: cfg.MQTT.TLS.ClientCert, ClientKey: cfg.MQTT.TLS.ClientKey},
		AgentID:      cfg.Agent.ID,
		Logger:       log.With("component", "mqtt"),
	}
}
