package agent

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/agent/mllp"
	"github.com/edgecourier/courier/spool"
)

// TestMLLPSourceWiring: a config source becomes a listener on the agent's spool
// whose items carry the source's name, kind and priority, and whose metrics
// appear on /metrics.
func TestMLLPSourceWiring(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sp, err := spool.Open(ctx, spool.Options{Dir: t.TempDir(), Inspect: hl7Inspector(nil, 0)})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: &config.Config{File: "test.yaml"}, log: slog.New(slog.DiscardHandler), spool: sp}
	l, err := a.newMLLPSource(config.Source{Name: "lab-feed", Kind: "mllp", Listen: "127.0.0.1:0",
		MaxMessage: 1 << 20, Priority: "high", HL7: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; sp.Close() }()

	c, err := mllp.Dial(ctx, l.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ack, err := c.Send([]byte("MSH|^~\\&|LAB|FAC|CUR|CLI|20260101||ORU^R01|W1|P|2.5.1\rPID|1\r"), 30*time.Second)
	if err != nil || mllp.ACKCode(ack) != "AA" {
		t.Fatalf("ACK %q, %v", ack, err)
	}
	its, err := sp.List(ctx, spool.ListFilter{})
	if err != nil || len(its) != 1 {
		t.Fatalf("items %v %v", its, err)
	}
	if it := its[0]; it.Source != "lab-feed" || it.SourceKind != "mllp" || it.Priority != spool.PriorityHigh || len(it.Envelope) == 0 {
		t.Errorf("item: source %q kind %q priority %v envelope %q", it.Source, it.SourceKind, it.Priority, it.Envelope)
	}
	// The collectors newMetrics registers on /metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.MLLPCollectors()...)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b := rec.Body
	for _, want := range []string{`courier_mllp_acks_total{code="AA",source="lab-feed"} 1`,
		`courier_mllp_connections_open{source="lab-feed"} 1`, `courier_mllp_messages_total{outcome="received",source="lab-feed"} 1`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, b.String())
		}
	}

	if _, err := a.newMLLPSource(config.Source{Name: "x", Kind: "mllp", Listen: l.Addr().String()}); err == nil {
		t.Error("a second listener on a taken port did not fail")
	}
}
