package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/prometheuscollector"
)

type metrics struct {
	verified     prometheus.Counter
	mismatch     *prometheus.CounterVec
	bytes        prometheus.Counter
	authFailures prometheus.Counter
	fallback     prometheus.Counter
	catchUp      prometheus.Counter
	expired      prometheus.Counter
}

// newMetrics registers Courier's counters, tusd's collector and the Go
// runtime in a registry of the server's own, so several servers (tests,
// `courier dev`) can live in one process.
func newMetrics(reg *prometheus.Registry, tusd handler.Metrics) *metrics {
	m := &metrics{
		verified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_verified_total",
			Help: "Uploads whose whole-file SHA-256 matched their sha256 metadata.",
		}),
		mismatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_ingest_checksum_mismatch_total",
			Help: "Checksum mismatches answered with 460, by kind (chunk or file).",
		}, []string{"kind"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_bytes_received_total",
			Help: "Bytes written to the store.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_auth_failures_total",
			Help: "Requests refused with 401 or 403.",
		}),
		fallback: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_digest_fallback_total",
			Help: "Whole-file digests computed by reading the stored object because the running digest state was lost.",
		}),
		catchUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_digest_catchup_total",
			Help: "Times the running digest was brought up to date by reading only the bytes a crash left unhashed.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_expired_uploads_total",
			Help: "Abandoned uploads removed by the janitor.",
		}),
	}
	m.mismatch.WithLabelValues("chunk")
	m.mismatch.WithLabelValues("file")
	reg.MustRegister(m.verified, m.mismatch, m.bytes, m.authFailures, m.fallback, m.catchUp, m.expired,
		prometheuscollector.New(tusd),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
