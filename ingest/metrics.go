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

	connOpen      prometheus.Gauge
	connLimited   *prometheus.CounterVec
	heldBytes     *prometheus.GaugeVec
	heldRefused   prometheus.Counter
	slowBodies    prometheus.Counter
	storeFull     prometheus.Counter
	tornDiscarded prometheus.Counter
	writeOnce     prometheus.Counter
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
			Help: "Refused credentials and accesses: 401, 403, someone else's upload, failed TLS handshakes.",
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
		connOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "courier_ingest_connections_open",
			Help: "Client connections open now (on listeners wrapped by LimitListener).",
		}),
		connLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_ingest_connections_limited_total",
			Help: "Connections held back by a cap: total (accept waited for a free slot) or per_address (closed at once).",
		}, []string{"cap"}),
		heldBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "courier_ingest_held_chunk_bytes",
			Help: "Bytes reserved for checksummed chunks being held until checked, in memory or in temporary files.",
		}, []string{"where"}),
		heldRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_held_chunk_refused_total",
			Help: "Checksummed chunks refused with 503 ERR_SERVER_BUSY because the held-chunk memory or disk bound was reached.",
		}),
		slowBodies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_slow_bodies_total",
			Help: "Request bodies cut off for pausing too long or staying below the minimum average rate.",
		}),
		storeFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_store_full_total",
			Help: "Requests answered 503 ERR_STORE_FULL because the store (or the temp dir) had no space.",
		}),
		tornDiscarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_torn_uploads_discarded_total",
			Help: "Uploads whose .info was torn (a create cut short) and were discarded so their courier-id could be created again.",
		}),
		writeOnce: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_ingest_write_once_refused_total",
			Help: "DELETEs of verified uploads refused with 403 ERR_WRITE_ONCE.",
		}),
	}
	m.mismatch.WithLabelValues("chunk")
	m.mismatch.WithLabelValues("file")
	m.connLimited.WithLabelValues("total")
	m.connLimited.WithLabelValues("per_address")
	m.heldBytes.WithLabelValues("memory")
	m.heldBytes.WithLabelValues("disk")
	reg.MustRegister(m.verified, m.mismatch, m.bytes, m.authFailures, m.fallback, m.catchUp, m.expired,
		m.connOpen, m.connLimited, m.heldBytes, m.heldRefused, m.slowBodies, m.storeFull, m.tornDiscarded, m.writeOnce,
		prometheuscollector.New(tusd),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
