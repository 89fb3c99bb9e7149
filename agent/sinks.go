package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/events"
	"github.com/edgecourier/courier/agent/mqtt"
)

// sinkSet is the event sinks a config asks for, with what must be closed after them.
type sinkSet struct {
	sinks   []events.Sink
	names   []string // as the spool knows them: one outbox row per event and name
	closers []io.Closer
}

// Close closes the sinks (not the MQTT connection an mqtt sink publishes on).
func (s *sinkSet) Close() error {
	if s == nil {
		return nil
	}
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i].Close())
	}
	s.closers = nil
	return errors.Join(errs...)
}

func (s *sinkSet) add(sink events.Sink, name string) {
	s.sinks = append(s.sinks, sink)
	s.names = append(s.names, name)
}

// openSinks opens the sinks of cfg's events section: events.file, and events.mqtt
// on conn (nil: no broker). `courier run` and `courier events replay` both use it.
func openSinks(cfg *config.Config, conn *mqtt.Conn, tee io.Writer) (*sinkSet, error) {
	s := &sinkSet{}
	if cfg.Events.File != "" {
		fs, err := events.OpenFile(cfg.Events.File, tee)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, fs)
		s.add(fs, fs.Name())
	}
	if conn != nil && cfg.Events.MQTT != nil && *cfg.Events.MQTT {
		es := mqtt.NewEventSink(conn, 0)
		s.add(batchSink{es}, es.Name())
	}
	return s, nil
}

// agentSinks is openSinks for the running agent: with no consumer configured, events
// are logged (ids only) so items still finish and leave the spool.
func agentSinks(cfg *config.Config, conn *mqtt.Conn, tee io.Writer, log *slog.Logger) (*sinkSet, error) {
	s, err := openSinks(cfg, conn, tee)
	if err != nil {
		return nil, err
	}
	if len(s.sinks) == 0 {
		s.add(logSink{log.With("component", "events")}, "log")
	}
	return s, nil
}

// ReplaySinks opens the config's event sinks for `courier events replay`, on an MQTT
// connection of its own (a transient session: the agent's stays untouched).
func ReplaySinks(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]events.Sink, func(), error) {
	var conn *mqtt.Conn
	if cfg.Events.MQTT != nil && *cfg.Events.MQTT && cfg.MQTT.Broker != "" {
		o := MQTTOptions(cfg, log)
		o.ClientID = "courier-" + cfg.Agent.ID + "-replay"
		o.Transient = true
		c, err := mqtt.New(o)
		if err != nil {
			return nil, nil, err
		}
		if err := c.Start(ctx); err != nil {
			c.Close()
			return nil, nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = c.WaitConnected(wctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("mqtt.broker %s: not reachable: %w", cfg.MQTT.Broker, err)
		}
		conn = c
	}
	closeConn := func() {
		if conn != nil {
			conn.Close()
		}
	}
	s, err := openSinks(cfg, conn, nil)
	if err != nil {
		closeConn()
		return nil, nil, err
	}
	if len(s.sinks) == 0 {
		closeConn()
		return nil, nil, fmt.Errorf("%s: no event sink configured (events.file or events.mqtt)", cfg.File)
	}
	return s.sinks, func() { s.Close(); closeConn() }, nil
}

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
