package mllp

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the MLLP listeners' Prometheus collectors, labelled by source name.
// One Metrics may serve several listeners; register Collectors() once.
type Metrics struct {
	messages    *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	acks        *prometheus.CounterVec
	open        *prometheus.GaugeVec
	connections *prometheus.CounterVec
	garbage     *prometheus.CounterVec
	dropped     *prometheus.CounterVec
}

// NewMetrics makes an unregistered set of collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_mllp_messages_total",
			Help: "MLLP frames received, by outcome (received, duplicate, rejected, refused_peer, try_later).",
		}, []string{"source", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_mllp_bytes_total",
			Help: "Bytes of MLLP messages received (inside frames).",
		}, []string{"source"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_mllp_acks_total",
			Help: "Acknowledgements sent, by MSA-1 code (AA, AE, AR, CA, CE, CR).",
		}, []string{"source", "code"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "courier_mllp_connections_open",
			Help: "MLLP connections open now.",
		}, []string{"source"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_mllp_connections_total",
			Help: "MLLP connections accepted or refused (accepted, over_limit, peer_not_allowed, tls_failed).",
		}, []string{"source", "result"}),
		garbage: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_mllp_garbage_bytes_total",
			Help: "Bytes between MLLP frames that were skipped.",
		}, []string{"source"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_mllp_connections_closed_total",
			Help: "MLLP connections closed by us or the peer, by reason (eof, half_frame, idle_timeout, frame_timeout, error, shutdown).",
		}, []string{"source", "reason"}),
	}
}

// Collectors are what a Prometheus registry needs.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.messages, m.bytes, m.acks, m.open, m.connections, m.garbage, m.dropped}
}
