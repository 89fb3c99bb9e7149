package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Status is a suggested shape for the retained status message; Report may return
// any JSON-encodable value instead.
type Status struct {
	State         string         `json:"state"` // online | paused | offline | …
	Version       string         `json:"version,omitempty"`
	Counts        map[string]int `json:"counts,omitempty"`
	OldestWaiting *time.Time     `json:"oldest_waiting,omitempty"`
	LastError     string         `json:"last_error,omitempty"`
	Time          time.Time      `json:"time"`
}

// StatusPublisher keeps courier/<agent-id>/status current: retained, QoS 1, on every
// connect, on every Changed (at most once a second) and every Interval. On a clean
// stop it leaves {"state":"offline","agent":…,"at":…} behind, as the last will does
// when the agent dies.
type StatusPublisher struct {
	conn     *Conn
	report   func(ctx context.Context) (any, error)
	interval time.Duration
	kick     chan struct{}
}

// NewStatusPublisher registers the publisher on c (before c.Start). report builds the
// payload; interval 0 means one minute.
func NewStatusPublisher(c *Conn, interval time.Duration, report func(ctx context.Context) (any, error)) *StatusPublisher {
	if interval <= 0 {
		interval = time.Minute
	}
	p := &StatusPublisher{conn: c, report: report, interval: interval, kick: make(chan struct{}, 1)}
	c.OnConnect(func(context.Context) { p.Changed() })
	return p
}

// MinGap is the least time between two status publishes caused by changes.
const MinGap = time.Second

// Changed asks for a publish because the agent's state changed (the link went down,
// an item was quarantined). Changes closer than MinGap are folded into one publish.
func (p *StatusPublisher) Changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends, then publishes offline (bounded by a few seconds).
func (p *StatusPublisher) Run(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-p.kick:
			if gap := MinGap - time.Since(last); gap > 0 {
				select {
				case <-time.After(gap):
				case <-ctx.Done():
					continue // the next round publishes offline
				}
			}
		case <-t.C:
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = p.conn.publish(sctx, StatusTopic(p.conn.opts.AgentID), true, offlinePayload(p.conn.opts.AgentID, time.Now()))
			return nil
		}
		last = time.Now()
		if err := p.PublishNow(ctx); err != nil && ctx.Err() == nil {
			p.conn.log.Debug("mqtt status not published; next attempt at the next tick or connect", "err", err)
		}
	}
}

// PublishNow builds and publishes the status once.
func (p *StatusPublisher) PublishNow(ctx context.Context) error {
	v, err := p.report(ctx)
	if err != nil {
		v = Status{State: "online", LastError: "status report: " + err.Error(), Time: time.Now().UTC()}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("mqtt status: encode: %w", err)
	}
	if err := p.conn.publish(ctx, StatusTopic(p.conn.opts.AgentID), true, b); err != nil {
		return fmt.Errorf("mqtt status: publish: %w", err)
	}
	return nil
}
