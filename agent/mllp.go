package agent

// The `kind: mllp` sources' wiring, kept apart from agent.go: config → mllp.Options,
// and the listeners' metrics (registered in metrics.go).

import (
	"crypto/tls"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/mllp"
	"github.com/edgecourier/courier/spool"
)

// newMLLPSource binds the listener of one `kind: mllp` source (a taken port fails
// here, at start); it accepts nothing until Run.
func (a *Agent) newMLLPSource(sc config.Source) (*mllp.Listener, error) {
	var tc *tls.Config
	if sc.TLS.CertFile != "" {
		var err error
		if tc, err = mllp.ServerTLS(sc.TLS.CertFile, sc.TLS.KeyFile, sc.TLS.ClientCA); err != nil {
			return nil, err
		}
	}
	prio, _ := spool.ParsePriority(sc.Priority)
	return mllp.Listen(a.spool, mllp.Options{
		Name:         sc.Name,
		Listen:       sc.Listen,
		TLS:          tc,
		AllowedPeers: sc.AllowedPeers,
		MaxMessage:   int64(sc.MaxMessage),
		Priority:     prio,
		NoInspect:    sc.HL7 == "off",
		Logger:       a.log.With("component", "mllp"),
		Metrics:      a.mllpMetricSet(),
	})
}

// mllpSources binds every mllp source, or none: on an error those already bound
// are closed again.
func (a *Agent) mllpSources() ([]*mllp.Listener, error) {
	var ls []*mllp.Listener
	for i, sc := range a.cfg.Sources {
		if sc.Kind != "mllp" {
			continue
		}
		l, err := a.newMLLPSource(sc)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, &config.Error{File: a.cfg.File, Key: fmt.Sprintf("sources[%d]", i), Problem: err.Error()}
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// mllpMetricSet is the one set of collectors every mllp source of this agent counts in.
func (a *Agent) mllpMetricSet() *mllp.Metrics {
	if a.mllpMetrics == nil {
		a.mllpMetrics = mllp.NewMetrics()
	}
	return a.mllpMetrics
}

// MLLPCollectors are the mllp sources' Prometheus collectors, for a registry (they
// may be registered before the sources start; without an mllp source they stay empty).
func (a *Agent) MLLPCollectors() []prometheus.Collector {
	return a.mllpMetricSet().Collectors()
}
