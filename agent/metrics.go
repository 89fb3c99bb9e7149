package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgecourier/courier/spool"
)

// metrics is what /metrics serves. Gauges that mirror the spool are read at scrape
// time by statusCollector; counters of events in the process are fields here,
// registered in newMetrics. To add a metric: a field, its constructor, one
// MustRegister line.
type metrics struct {
	reg     *prometheus.Registry
	reloads *prometheus.CounterVec // courier_config_reloads_total{result}
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "courier_config_reloads_total",
			Help: "Configuration reloads by result: applied, partial (some keys need a restart) or failed.",
		}, []string{"result"}),
	}
	m.reg.MustRegister(statusCollector{a: a}, m.reloads)
	m.reg.MustRegister(a.MLLPCollectors()...) // empty without an mllp source
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

var (
	itemsDesc = prometheus.NewDesc("courier_items", "Items in the spool per state.", []string{"state"}, nil)
	bytesDesc = prometheus.NewDesc("courier_spool_bytes", "Bytes of content held in the spool.", nil, nil)
	linkDesc  = prometheus.NewDesc("courier_upload_link_up", "0 when uploads are paused (401/403 from the server).", nil, nil)
	oldDesc   = prometheus.NewDesc("courier_oldest_waiting_seconds", "Age of the oldest item not yet verified.", nil, nil)
)

// statusCollector reads the agent's status at each scrape.
type statusCollector struct{ a *Agent }

func (statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{itemsDesc, bytesDesc, linkDesc, oldDesc} {
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
	up := 1.0
	if st.State == "paused" {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(linkDesc, prometheus.GaugeValue, up)
	if st.OldestWaiting != nil {
		ch <- prometheus.MustNewConstMetric(oldDesc, prometheus.GaugeValue, time.Since(*st.OldestWaiting).Seconds())
	}
}
