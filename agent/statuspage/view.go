package statuspage

import (
	"sync"
	"time"
)

// View is everything the page shows, as /api/status serves it.
type View struct {
	Agent     string    `json:"agent"`
	Version   string    `json:"version"`
	State     string    `json:"state"` // online | paused | stopped
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`

	Link        Link           `json:"link"`
	Counts      map[string]int `json:"counts"`
	Spool       Spool          `json:"spool"`
	Uploads     []Upload       `json:"uploads"`
	History     []Sample       `json:"history"`
	Recent      []Verified     `json:"recent"`
	Errors      []Error        `json:"errors"`
	Quarantined []Quarantined  `json:"quarantined"`
	Config      Config         `json:"config"`
	MQTT        *MQTT          `json:"mqtt,omitempty"`
}

// Link is the upload link: up, down (since, reason) or paused (the server refused our credentials).
type Link struct {
	State  string     `json:"state"` // up | down | paused
	Since  *time.Time `json:"since,omitempty"`
	Reason string     `json:"reason,omitempty"`
	Advice string     `json:"advice,omitempty"` // what a person can do about it
}

type Spool struct {
	Bytes    int64 `json:"bytes"`
	Limit    int64 `json:"limit"`     // spool.max_bytes, 0 = none
	FreeDisk int64 `json:"free_disk"` // on the spool's file system
}

// Upload is one transfer in progress.
type Upload struct {
	ID         string  `json:"id"`
	Size       int64   `json:"size"`
	Sent       int64   `json:"sent"`
	Rate       float64 `json:"rate"` // bytes/s over the last seconds
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	ChunkSize  int64   `json:"chunk_size,omitempty"`
}

// Sample is one point of the charts.
type Sample struct {
	At            time.Time `json:"at"`
	VerifiedBytes int64     `json:"verified_bytes"` // since the previous sample
	VerifiedFiles int64     `json:"verified_files"`
	Queue         int       `json:"queue"` // items not yet verified
}

type Verified struct {
	ID     string    `json:"id"`
	Size   int64     `json:"size"`
	SHA256 string    `json:"sha256"`
	Source string    `json:"source"`
	At     time.Time `json:"at"`
}

type Error struct {
	ID     string    `json:"id,omitempty"`
	State  string    `json:"state,omitempty"`
	Error  string    `json:"error"`
	Advice string    `json:"advice,omitempty"`
	At     time.Time `json:"at"`
	Count  int       `json:"count"` // identical errors collapsed into one line
}

type Quarantined struct {
	ID     string    `json:"id"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	Retry  string    `json:"retry"` // the command that sends it again
}

type Config struct {
	Version int64  `json:"version"`
	Source  string `json:"source"` // local | remote | last-known-good
	SHA256  string `json:"sha256"`
}

type MQTT struct {
	Connected bool   `json:"connected"`
	LastError string `json:"last_error,omitempty"`
}

// History keeps the last hour of samples (one every Interval) for the charts.
type History struct {
	mu      sync.Mutex
	samples []Sample
	max     int
}

// Interval is how often the agent samples for the charts.
const Interval = 10 * time.Second

// NewHistory keeps an hour at Interval.
func NewHistory() *History { return &History{max: int(time.Hour / Interval)} }

// Add records a sample, dropping the oldest beyond an hour.
func (h *History) Add(s Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, s)
	if len(h.samples) > h.max {
		h.samples = append(h.samples[:0:0], h.samples[len(h.samples)-h.max:]...)
	}
}

// Samples returns a copy, oldest first.
func (h *History) Samples() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Sample(nil), h.samples...)
}

// CollapseErrors folds identical messages (an outage gives every item the same one)
// into one line with a count, newest first, at most n lines.
func CollapseErrors(errs []Error, n int) []Error {
	var out []Error
	idx := map[string]int{}
	for _, e := range errs {
		if i, ok := idx[e.Error]; ok {
			out[i].Count++
			if e.At.After(out[i].At) {
				out[i].At = e.At
			}
			continue
		}
		if e.Count == 0 {
			e.Count = 1
		}
		if e.Advice == "" {
			e.Advice = Advice(e.Error)
		}
		idx[e.Error] = len(out)
		out = append(out, e)
	}
	if len(out) > n {
		out = out[:n]
	}
	return out
}
