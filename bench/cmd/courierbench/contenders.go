//go:build !windows

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// run is one contender's measurement in one round.
type sample struct {
	seconds float64
	rss     int64 // agent peak RSS, 0 when not measured
}

// courierSetup is an ingest and an agent watching an inbox, started fresh for a round.
type courierSetup struct {
	dir, inbox, staging, objects, events string
	ingest, agent                        *proc
}

func (b *bench) startCourier(ctx context.Context, name string) (*courierSetup, error) {
	s := &courierSetup{dir: filepath.Join(b.o.work, name)}
	os.RemoveAll(s.dir)
	s.inbox, s.staging, s.objects = filepath.Join(s.dir, "inbox"), filepath.Join(s.dir, "staging"), filepath.Join(s.dir, "objects")
	s.events = filepath.Join(s.dir, "events.jsonl")
	for _, d := range []string{s.inbox, s.staging, s.objects, filepath.Join(s.dir, "data")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ip, err := freePort()
	if err != nil {
		return nil, err
	}
	hp, err := freePort()
	if err != nil {
		return nil, err
	}
	// settle is short because files arrive by rename (whole at once); everything else is
	// the shipped default unless the line says otherwise.
	cfg := fmt.Sprintf(`agent: { id: bench, data_dir: %s/data }
upload: { endpoint: "http://127.0.0.1:%d/files/", chunk_size: 8MiB }
spool: { max_bytes: 100GiB, min_free_disk: 1GiB }
sources:
  - { name: inbox, kind: folder, path: %s, settle: 100ms, after: delete, max_size: 100GiB, hl7: off }
events: { file: %s }
http: { listen: "127.0.0.1:%d" }
log: { level: warn, format: text }
`, s.dir, ip, s.inbox, s.events, hp)
	cfgPath := filepath.Join(s.dir, "courier.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if s.ingest, err = startProc(ctx, b.ingest, "--listen", fmt.Sprintf("127.0.0.1:%d", ip), "--store", "file://"+s.objects, "--log-level", "warn"); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", ip), 10*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("courier-ingest: %v\n%s", err, s.ingest.log)
	}
	if s.agent, err = startProc(ctx, b.courier, "run", "--config", cfgPath); err != nil {
		s.stop()
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", hp), 20*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("courier run: %v\n%s", err, s.agent.log)
	}
	return s, nil
}

func (s *courierSetup) stop() {
	s.agent.stop()
	s.ingest.stop()
}

// waitVerified polls the events file until n verified events are there.
func (s *courierSetup) waitVerified(ctx context.Context, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for countLines(s.events, `"org.edgecourier.file.verified.v1"`) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d files verified after %s\nagent log:\n%s", countLines(s.events, `"org.edgecourier.file.verified.v1"`), n, limit, tail(s.agent.log.String()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// checkStored reads every verified event and checks the object the ingest stored
// (size and SHA-256) against the event and against want (digest → count).
func (s *courierSetup) checkStored(want map[string]int) error {
	f, err := os.Open(s.events)
	if err != nil {
		return err
	}
	defer f.Close()
	got := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev struct {
			Type string `json:"type"`
			Data struct {
				FileID string `json:"file_id"`
				SHA256 string `json:"sha256"`
				Size   int64  `json:"size"`
			} `json:"data"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Type != "org.edgecourier.file.verified.v1" {
			continue
		}
		sum, n, err := sha256File(filepath.Join(s.objects, ev.Data.FileID))
		if err != nil || sum != ev.Data.SHA256 || n != ev.Data.Size {
			return fmt.Errorf("%w: object %s: %d bytes sha256 %s, event says %d bytes %s (%v)", errCheck, ev.Data.FileID, n, sum, ev.Data.Size, ev.Data.SHA256, err)
		}
		got[sum]++
	}
	for d, c := range want {
		if got[d] != c {
			return fmt.Errorf("%w: digest %s verified %d times, want %d", errCheck, d[:12], got[d], c)
		}
	}
	return nil
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// courierFiles drops files (already written under staging) into the inbox by rename and
// times until every one has its verified event.
func (b *bench) courierFiles(ctx context.Context, name string, make func(staging string) (map[string]int, []string, error), limit time.Duration) (sample, error) {
	s, err := b.startCourier(ctx, name)
	if err != nil {
		return sample{}, err
	}
	defer s.stop()
	want, names, err := make(s.staging)
	if err != nil {
		return sample{}, err
	}
	t0 := time.Now()
	for _, n := range names {
		if err := os.Rename(filepath.Join(s.staging, n), filepath.Join(s.inbox, n)); err != nil {
			return sample{}, err
		}
	}
	if err := s.waitVerified(ctx, len(names), limit); err != nil {
		return sample{}, err
	}
	el := time.Since(t0).Seconds()
	rss := s.agent.peakRSS()
	if err := s.checkStored(want); err != nil {
		return sample{}, err
	}
	return sample{seconds: el, rss: rss}, nil
}

// tusdSetup is stock tusd with its file store, as its README starts it.
type tusdSetup struct {
	dir, store, endpoint string
	p                    *proc
}

func (b *bench) startTusd(ctx context.Context, name string) (*tusdSetup, error) {
	t := &tusdSetup{dir: filepath.Join(b.o.work, name)}
	os.RemoveAll(t.dir)
	t.store = filepath.Join(t.dir, "store")
	if err := os.MkdirAll(t.store, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if t.p, err = startProc(ctx, b.tusd, "-host", "127.0.0.1", "-port", strconv.Itoa(port), "-upload-dir", t.store, "-base-path", "/files/"); err != nil {
		return nil, err
	}
	t.endpoint = fmt.Sprintf("http://127.0.0.1:%d/files/", port)
	if err := waitHTTP(ctx, t.endpoint, 10*time.Second); err != nil {
		t.p.stop()
		return nil, fmt.Errorf("tusd: %v\n%s", err, t.p.log)
	}
	return t, nil
}

// checkObject checks tusd's stored object for an upload URL.
func (t *tusdSetup) checkObject(url, wantSum string, wantSize int64) error {
	id := url[strings.LastIndex(url, "/")+1:]
	sum, n, err := sha256File(filepath.Join(t.store, id))
	if err != nil || sum != wantSum || n != wantSize {
		return fmt.Errorf("%w: tusd object %s: %d bytes sha256 %.12s, want %d bytes %.12s (%v)", errCheck, id, n, sum, wantSize, wantSum, err)
	}
	return nil
}

// tusJS uploads files with tus-js-client (defaults), conc at a time, and checks them.
func (b *bench) tusJS(ctx context.Context, name string, files []string, sums []string, sizes []int64, conc int) (sample, error) {
	t, err := b.startTusd(ctx, name)
	if err != nil {
		return sample{}, err
	}
	defer t.p.stop()
	list := filepath.Join(t.dir, "files.txt")
	if err := os.WriteFile(list, []byte(strings.Join(files, "\n")+"\n"), 0o600); err != nil {
		return sample{}, err
	}
	cmd := exec.CommandContext(ctx, "node", filepath.Join(b.nodeDir, "upload.js"), t.endpoint, strconv.Itoa(conc), list)
	cmd.Dir = b.nodeDir
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return sample{}, fmt.Errorf("%w: tus-js-client: %v %s", errCheck, err, msg)
	}
	var secs float64
	urls := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			File, URL string
			Seconds   float64
		}
		json.Unmarshal([]byte(line), &r)
		if r.Seconds > 0 {
			secs = r.Seconds
		} else {
			urls[r.File] = r.URL
		}
	}
	for i, f := range files {
		if err := t.checkObject(urls[f], sums[i], sizes[i]); err != nil {
			return sample{}, err
		}
	}
	return sample{seconds: secs}, nil
}

// curlPatch creates an upload at tusd and sends the whole file in one raw PATCH with
// curl: the floor for any tus transfer on this machine.
func (b *bench) curlPatch(ctx context.Context, name, file, sum string, size int64) (sample, error) {
	t, err := b.startTusd(ctx, name)
	if err != nil {
		return sample{}, err
	}
	defer t.p.stop()
	t0 := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return sample{}, err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated || loc == "" {
		return sample{}, fmt.Errorf("%w: tusd POST: %s", errCheck, resp.Status)
	}
	if strings.HasPrefix(loc, "/") {
		loc = strings.TrimSuffix(t.endpoint, "/files/") + loc
	}
	cmd := exec.CommandContext(ctx, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH", "-T", file,
		"-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0", "-H", "Content-Type: application/offset+octet-stream", "-H", "Expect:", loc)
	out, err := cmd.Output()
	el := time.Since(t0).Seconds()
	if err != nil || strings.TrimSpace(string(out)) != "204" {
		return sample{}, fmt.Errorf("%w: curl PATCH: %v %s", errCheck, err, out)
	}
	if err := t.checkObject(loc, sum, size); err != nil {
		return sample{}, err
	}
	return sample{seconds: el}, nil
}
