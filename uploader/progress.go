package uploader

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Progress is one upload's progress. Options.Progress gets it at most about twice a
// second per upload and once with Done; Uploads returns it for every upload in
// flight.
type Progress struct {
	ItemID    string        `json:"item"`
	Sent      int64         `json:"sent"`       // bytes the server holds or that were handed to the connection
	Total     int64         `json:"total"`      // the file's size
	Rate      float64       `json:"rate"`       // bytes per second over about the last 10 s; 0 until known
	Remaining time.Duration `json:"-"`          // time left at Rate; 0 when unknown (JSON: remaining_seconds)
	ChunkSize int64         `json:"chunk_size"` // the PATCH size now, adapted to the link
	Started   time.Time     `json:"started"`    // when this attempt began
	Done      bool          `json:"done"`       // verified
}

// MarshalJSON writes Remaining as remaining_seconds.
func (p Progress) MarshalJSON() ([]byte, error) {
	type plain Progress
	return json.Marshal(struct {
		plain
		RemainingSeconds float64 `json:"remaining_seconds,omitempty"`
	}{plain(p), p.Remaining.Seconds()})
}

// Uploads returns the progress of every upload in flight, by item id.
func (u *Uploader) Uploads() []Progress {
	u.activeMu.Lock()
	ts := make([]*tracker, 0, len(u.active))
	for _, t := range u.active {
		ts = append(ts, t)
	}
	u.activeMu.Unlock()
	out := make([]Progress, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.snapshot(time.Now()))
	}
	slices.SortFunc(out, func(a, b Progress) int { return strings.Compare(a.ItemID, b.ItemID) })
	return out
}

// Progress logging and rate window.
const (
	rateWindow      = 10 * time.Second
	progressLogEach = 10 * time.Second
	progressReport  = 500 * time.Millisecond
)

// tracker follows one attempt: it keeps samples for the rate, calls
// Options.Progress (throttled) and logs a long upload every 10 s.
type tracker struct {
	u       *Uploader
	id      string
	total   int64
	started time.Time
	log     *slog.Logger

	mu         sync.Mutex
	sent       int64
	samples    []sample // within rateWindow, oldest first
	lastReport time.Time
	lastLog    time.Time
}

type sample struct {
	at   time.Time
	sent int64
}

func (u *Uploader) track(id string, total int64, log *slog.Logger) *tracker {
	now := time.Now()
	t := &tracker{u: u, id: id, total: total, started: now, log: log, lastLog: now}
	u.activeMu.Lock()
	u.active[id] = t
	u.activeMu.Unlock()
	return t
}

func (t *tracker) stop() {
	t.u.activeMu.Lock()
	if t.u.active[t.id] == t {
		delete(t.u.active, t.id)
	}
	t.u.activeMu.Unlock()
}

// report records that sent bytes are at the server or on their way; force calls
// Options.Progress even if one was just made.
func (t *tracker) report(sent int64, force bool) {
	if t == nil {
		return
	}
	now := time.Now()
	t.mu.Lock()
	if sent < t.sent {
		t.samples = t.samples[:0] // resumed from a lower offset: start the rate afresh
	}
	t.sent = sent
	if n := len(t.samples); n == 0 || now.Sub(t.samples[n-1].at) >= 200*time.Millisecond {
		t.samples = append(t.samples, sample{now, sent})
	}
	for len(t.samples) > 2 && now.Sub(t.samples[1].at) > rateWindow {
		t.samples = t.samples[1:]
	}
	call := t.u.opts.Progress != nil && (force || now.Sub(t.lastReport) >= progressReport)
	if call {
		t.lastReport = now
	}
	logNow := now.Sub(t.lastLog) >= t.u.progressLog
	if logNow {
		t.lastLog = now
	}
	t.mu.Unlock()
	if !call && !logNow {
		return
	}
	p := t.snapshot(now)
	if call {
		t.u.opts.Progress(p)
	}
	if logNow {
		args := []any{"sent", p.Sent, "total", p.Total, "rate", int64(p.Rate), "chunk_size", p.ChunkSize}
		if p.Remaining > 0 {
			args = append(args, "remaining", p.Remaining.Round(time.Second).String())
		}
		t.log.Info("upload progress", args...)
	}
}

func (t *tracker) snapshot(now time.Time) Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := Progress{ItemID: t.id, Sent: t.sent, Total: t.total, ChunkSize: t.u.chunk.Load(), Started: t.started}
	if len(t.samples) > 0 {
		first := t.samples[0]
		if span := now.Sub(first.at); span >= time.Second && t.sent > first.sent {
			p.Rate = float64(t.sent-first.sent) / span.Seconds()
		}
	}
	if p.Rate > 0 && t.total > t.sent {
		p.Remaining = time.Duration(float64(t.total-t.sent) / p.Rate * float64(time.Second))
	}
	return p
}
