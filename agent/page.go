package agent

// The local status page (agent/statuspage) served at http.listen "/": the agent
// fills its View from the same Snapshot that `courier status`, /metrics and the
// MQTT status topic read, plus the uploads in progress and an hour of samples.

import (
	"context"
	"fmt"
	"time"

	"github.com/edgecourier/courier/agent/statuspage"
	"github.com/edgecourier/courier/spool"
	"github.com/edgecourier/courier/uploader"
)

// verifiedStates are the states an item reaches once the server has verified it.
var verifiedStates = []spool.State{spool.StateVerified, spool.StatePublished, spool.StateDone}

// PageView builds what the status page shows now.
func (a *Agent) PageView(ctx context.Context) (*statuspage.View, error) {
	st, err := a.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	up, cfg := a.uploader, a.cfg
	a.mu.Unlock()
	v := &statuspage.View{
		Agent: st.Agent, Version: st.Version, State: st.State,
		StartedAt: a.started, UpdatedAt: st.UpdatedAt,
		Counts: st.Counts,
		Spool:  statuspage.Spool{Bytes: st.SpoolBytes, Limit: int64(cfg.Spool.MaxBytes), FreeDisk: st.FreeDisk},
		Config: statuspage.Config{Version: st.Config.Version, Source: st.Config.Source, SHA256: st.Config.ConfigSHA256},
	}
	if v.Config.Source == "" {
		v.Config.Source = "local"
	}
	if v.Config.SHA256 == "" {
		v.Config.SHA256 = cfg.Digest() // the local file's effective configuration
	}
	if free, err := a.spool.FreeDisk(); err == nil {
		v.Spool.FreeDisk = free
	}
	if st.Link != nil {
		v.Link = pageLink(*st.Link)
	}
	if st.MQTT != nil {
		v.MQTT = &statuspage.MQTT{Connected: st.MQTT.Connected, LastError: st.MQTT.LastError}
	}
	for _, p := range up.Uploads() {
		v.Uploads = append(v.Uploads, statuspage.Upload{ID: p.ItemID, Size: p.Total, Sent: p.Sent,
			Rate: p.Rate, ETASeconds: p.Remaining.Seconds(), ChunkSize: p.ChunkSize})
	}
	if a.history != nil {
		v.History = a.history.Samples()
	}
	for _, s := range verifiedStates {
		items, err := a.spool.List(ctx, spool.ListFilter{State: s, Limit: 10})
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			v.Recent = append(v.Recent, statuspage.Verified{ID: it.ID, Size: it.Size, SHA256: it.SHA256, Source: it.Source, At: it.VerifiedAt})
		}
	}
	var errs []statuspage.Error
	for _, e := range st.LastErrors {
		errs = append(errs, statuspage.Error{ID: e.ID, State: string(e.State), Error: e.Error, At: e.At})
	}
	v.Errors = statuspage.CollapseErrors(errs, 10)
	q, err := a.spool.List(ctx, spool.ListFilter{State: spool.StateQuarantined, Limit: 50})
	if err != nil {
		return nil, err
	}
	for _, it := range q {
		v.Quarantined = append(v.Quarantined, statuspage.Quarantined{ID: it.ID, Reason: it.Reason, At: it.UpdatedAt,
			Retry: fmt.Sprintf("courier spool retry --config %s %s", configPath(cfg.File), it.ID)})
	}
	return v, nil
}

func configPath(file string) string {
	if file != "" {
		return file
	}
	return "FILE"
}

func pageLink(l uploader.LinkStatus) statuspage.Link {
	pl := statuspage.Link{State: l.State, Reason: l.Reason}
	if l.State != uploader.LinkUp && !l.Since.IsZero() {
		t := l.Since
		pl.Since = &t
	}
	if pl.Reason != "" {
		pl.Advice = statuspage.Advice(pl.Reason)
	}
	return pl
}

// sampleHistory adds a chart sample every statuspage.Interval until ctx ends.
func (a *Agent) sampleHistory(ctx context.Context) {
	t := time.NewTicker(statuspage.Interval)
	defer t.Stop()
	var lastFiles, lastBytes int64 = -1, -1
	for {
		if c, err := a.spool.Counts(ctx); err == nil {
			var files, queue int64
			for _, s := range verifiedStates {
				files += int64(c.ByState[s])
			}
			for _, s := range []spool.State{spool.StateReceived, spool.StateUploading, spool.StateWaiting} {
				queue += int64(c.ByState[s])
			}
			bytes := a.verifiedBytes.Load()
			s := statuspage.Sample{At: time.Now().UTC(), Queue: int(queue)}
			if lastFiles >= 0 {
				s.VerifiedFiles = max(0, files-lastFiles)
				s.VerifiedBytes = max(0, bytes-lastBytes)
			}
			lastFiles, lastBytes = files, bytes
			a.history.Add(s)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// progress counts verified bytes for the charts and metrics, then hands the
// progress to Options.Progress (courier dev's console).
func (a *Agent) progress(p uploader.Progress) {
	if p.Done {
		now := time.Now().UTC()
		a.lastVerified.Store(&now)
		a.verifiedBytes.Add(p.Total)
		if a.metrics != nil {
			a.metrics.bytesUploaded.Add(float64(p.Total))
			a.metrics.filesVerified.Inc()
		}
	}
	if a.opts.Progress != nil {
		a.opts.Progress(p)
	}
}

// linkChanged is the uploader's link watch: it hands the newest status to
// watchLink without blocking (an older one not yet taken is replaced).
func (a *Agent) linkChanged(l uploader.LinkStatus) {
	for {
		select {
		case a.linkCh <- l:
			return
		default:
		}
		select {
		case <-a.linkCh:
		default:
		}
	}
}

// watchLink acts on link changes: the MQTT status and the file `courier status`
// reads are refreshed at once, and when the link is back every waiting item is
// made due now instead of sitting out its backoff. (The uploader logs the change:
// one WARN down, one INFO back.)
func (a *Agent) watchLink(ctx context.Context) {
	prev := uploader.LinkUp
	for {
		var l uploader.LinkStatus
		select {
		case <-ctx.Done():
			return
		case l = <-a.linkCh:
		}
		if l.State == uploader.LinkUp && prev != uploader.LinkUp {
			if n, err := a.spool.WakeWaiting(ctx); err != nil {
				a.log.Warn("link is back but waiting items could not be woken; they go at their next attempt", "err", err)
			} else if n > 0 {
				a.mu.Lock()
				up := a.uploader
				a.mu.Unlock()
				up.Notify()
				a.log.Debug("link is back: waiting items made due", "count", n)
			}
		}
		prev = l.State
		if p := a.statusPub.Load(); p != nil {
			p.Changed()
		}
		a.writeStatus(ctx, false)
	}
}
