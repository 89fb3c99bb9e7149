package agent

import (
	"context"
	"net/http"
	"time"

	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
)

// metrics is what /metrics serves. Gauges that mirror the spool are read at scrape
// time by statusCollector; counters of events in the process are fields here,
// registered in newMetrics. To add a metric: a field, its constructor, one
// MustRegister line.
type metrics struct {
	reg     *prometheus.Registry
	reloads *prometheus.CounterVec // courier_config_reloads_total{result}
	// courier_uploaded_bytes_total: bytes of files the server verified.
	bytesUploaded prometheus.Counter
	// courier_files_verified_total: files the server verified.
	filesVerified prometheus.Counter
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_config_reloads_total",
			Help: "Configuration reloads by result: applied, partial (some keys need a restart) or failed.",
		}, []string{"result"}),
		bytesUploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_uploaded_bytes_total",
			Help: "Bytes of files uploaded and verified by the server.",
		}),
		filesVerified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "courier_files_verified_total",
			Help: "Files uploaded and verified by the server.",
		}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "courier_build_info",
		Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": a.opts.Version, "goversion": runtime.Version(),
			"os": runtime.GOOS, "arch": runtime.GOARCH},
	})
	build.Set(1)
	m.reg.MustRegister(statusCollector{a: a}, m.reloads, m.bytesUploaded, m.filesVerified, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(a.MLLPCollectors()...) // empty without an mllp source
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

var (
	itemsDesc     = prometheus.NewDesc("courier_items", "Items in the spool per state.", []string{"state"}, nil)
	bytesDesc     = prometheus.NewDesc("courier_spool_bytes", "Bytes of content held in the spool.", nil, nil)
	linkDesc      = prometheus.NewDesc("courier_upload_link_up", "1 while the upload link is up, 0 while it is down or paused.", nil, nil)
	linkStateDesc = prometheus.NewDesc("courier_upload_link_state", "1 for the upload link's current state (up, down, paused), 0 for the others.", []string{"state"}, nil)
	mqttDesc      = prometheus.NewDesc("courier_mqtt_connected", "1 while connected to the MQTT broker (absent without a broker).", nil, nil)
	freeDesc      = prometheus.NewDesc("courier_free_disk_bytes", "Space left on the spool's file system.", nil, nil)
	verifiedDesc  = prometheus.NewDesc("courier_last_verified_timestamp_seconds", "When the server last verified a file (Unix time; absent until one is).", nil, nil)
	limitDesc     = prometheus.NewDesc("courier_spool_limit_bytes", "spool.max_bytes; 0 = no limit.", nil, nil)
	oldDesc       = prometheus.NewDesc("courier_oldest_waiting_seconds", "Age of the oldest item not yet verified.", nil, nil)
)

// statusCollector reads the agent's status at each scrape.
type statusCollector struct{ a *Agent }

func (statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{itemsDesc, bytesDesc, linkDesc, linkStateDesc, mqttDesc, limitDesc, oldDesc, freeDesc, verifiedDesc} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.a.Snapshot(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(itemsDesc, err)
		return
	}
	for _, s := range spool.AllStates {
		ch <- prometheus.MustNewConstMetric(itemsDesc, prometheus.GaugeValue, float64(st.Counts[string(s)]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(st.SpoolBytes))
	up := 0.0
	state := uploader.LinkUp
	if st.Link != nil && st.Link.State != "" {
		state = st.Link.State
	}
	if state == uploader.LinkUp {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(linkDesc, prometheus.GaugeValue, up)
	for _, s := range []string{uploader.LinkUp, uploader.LinkDown, uploader.LinkPaused} {
		v := 0.0
		if s == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(linkStateDesc, prometheus.GaugeValue, v, s)
	}
	if st.MQTT != nil {
		v := 0.0
		if st.MQTT.Connected {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(mqttDesc, prometheus.GaugeValue, v)
	}
	ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(st.SpoolLimit))
	ch <- prometheus.MustNewConstMetric(freeDesc, prometheus.GaugeValue, float64(st.FreeDisk))
	if st.LastVerified != nil {
		ch <- prometheus.MustNewConstMetric(verifiedDesc, prometheus.GaugeValue, float64(st.LastVerified.UnixNano())/1e9)
	}
	if st.OldestWaiting != nil {
		ch <- prometheus.MustNewConstMetric(oldDesc, prometheus.GaugeValue, time.Since(*st.OldestWaiting).Seconds())
	}
}
