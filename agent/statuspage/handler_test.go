package statuspage

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandlerServesPageAndView(t *testing.T) {
	v := &View{Agent: "clinic-042", State: "online", Counts: map[string]int{"waiting": 3}, Link: Link{State: "down", Reason: "dial tcp: connection refused"}}
	srv := httptest.NewServer(Handler(func(context.Context) (*View, error) { return v, nil }, nil))
	defer srv.Close()
	for _, p := range []string{"/", "/app.js", "/style.css"} {
		r, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || len(b) == 0 || !strings.Contains(r.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Fatalf("%s: %s, %d bytes, CSP %q", p, r.Status, len(b), r.Header.Get("Content-Security-Policy"))
		}
	}
	r, err := http.Get(srv.URL + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var got View
	if err := json.NewDecoder(r.Body).Decode(&got); err != nil || got.Agent != "clinic-042" || got.Counts["waiting"] != 3 {
		t.Fatalf("view: %+v %v", got, err)
	}
	if r, _ := http.Get(srv.URL + "/../../etc/passwd"); r.StatusCode != 404 {
		t.Fatalf("unknown path: %s", r.Status)
	}
}

func TestCollapseErrors(t *testing.T) {
	now := time.Now()
	errs := []Error{
		{ID: "a", Error: "dial tcp 127.0.0.1:9: connect: connection refused", At: now},
		{ID: "b", Error: "dial tcp 127.0.0.1:9: connect: connection refused", At: now.Add(-time.Second)},
		{ID: "c", Error: "413 Request Entity Too Large", At: now},
	}
	got := CollapseErrors(errs, 5)
	if len(got) != 2 || got[0].Count != 2 || !strings.Contains(got[0].Advice, "courier-ingest running") || !strings.Contains(got[1].Advice, "--max-size") {
		t.Fatalf("%+v", got)
	}
}

func TestHistoryKeepsAnHour(t *testing.T) {
	h := NewHistory()
	for i := 0; i < 400; i++ {
		h.Add(Sample{Queue: i})
	}
	s := h.Samples()
	if len(s) != 360 || s[0].Queue != 40 || s[359].Queue != 399 {
		t.Fatalf("len %d first %d last %d", len(s), s[0].Queue, s[len(s)-1].Queue)
	}
}
