package agent

// The `kind: mllp` sources' wiring, kept apart from agent.go: config → mllp.Options,
// and the listeners' metrics on /metrics.

import (
	"crypto/tls"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

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
	if a.mllpMetrics == nil {
		a.mllpMetrics = mllp.NewMetrics()
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
		Metrics:      a.mllpMetrics,
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

// MLLPCollectors are the mllp sources' Prometheus collectors (none without an
// mllp source), for a registry.
func (a *Agent) MLLPCollectors() []prometheus.Collector {
	if a.mllpMetrics == nil {
		return nil
	}
	return a.mllpMetrics.Collectors()
}

// writeMLLPMetrics appends the mllp collectors to the /metrics text.
func (a *Agent) writeMLLPMetrics(w io.Writer) {
	cs := a.MLLPCollectors()
	if len(cs) == 0 {
		return
	}
	reg := prometheus.NewRegistry()
	for _, c := range cs {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		a.log.Warn("mllp metrics", "err", err)
		return
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		enc.Encode(mf)
	}
}
