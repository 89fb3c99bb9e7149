//go:build !windows

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// result is one line of the report.
type result struct {
	Work    string
	Courier string // median, formatted
	Peer    string
	Ratio   float64 // as the goal states it
	RatioOf string  // what the ratio means
	Goal    string
	Met     bool
	Rounds  []float64 // courier's raw values, for the record
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (b *bench) all(ctx context.Context) error {
	if err := b.large(ctx); err != nil {
		return fmt.Errorf("large file: %w", err)
	}
	if err := b.smallFiles(ctx); err != nil {
		return fmt.Errorf("small files: %w", err)
	}
	if err := b.mqtt(ctx); err != nil {
		return fmt.Errorf("mqtt intake: %w", err)
	}
	if err := b.backlogTimes(ctx); err != nil {
		return fmt.Errorf("backlog: %w", err)
	}
	return nil
}

func (b *bench) large(ctx context.Context) error {
	size := int64(b.o.largeMiB) << 20
	master := filepath.Join(b.o.work, "large.src")
	b.logf("writing the %d MiB source file", b.o.largeMiB)
	if err := writeRandom(master, size, 42); err != nil {
		return err
	}
	sum, _, err := sha256File(master)
	if err != nil {
		return err
	}
	var courier, tusjs, curl, rss []float64
	for r := 0; r < b.o.rounds; r++ {
		order := []string{"courier", "tus-js-client", "curl"}
		for i := 0; i < r; i++ { // alternate who goes first
			order = append(order[1:], order[0])
		}
		for _, who := range order {
			switch who {
			case "courier":
				s, err := b.courierFiles(ctx, fmt.Sprintf("large-courier-%d", r), func(staging string) (map[string]int, []string, error) {
					return map[string]int{sum: 1}, []string{"large.bin"}, copyFile(master, filepath.Join(staging, "large.bin"))
				}, 10*time.Minute)
				if err != nil {
					return err
				}
				courier, rss = append(courier, s.seconds), append(rss, float64(s.rss))
			case "tus-js-client":
				s, err := b.tusJS(ctx, fmt.Sprintf("large-tusjs-%d", r), []string{master}, []string{sum}, []int64{size}, 1)
				if err != nil {
					return err
				}
				tusjs = append(tusjs, s.seconds)
			case "curl":
				s, err := b.curlPatch(ctx, fmt.Sprintf("large-curl-%d", r), master, sum, size)
				if err != nil {
					return err
				}
				curl = append(curl, s.seconds)
			}
			b.logf("large round %d %s done", r+1, who)
		}
	}
	os.Remove(master)
	c, t, k := median(courier), median(tusjs), median(curl)
	mib := float64(b.o.largeMiB)
	b.results = append(b.results,
		result{Work: fmt.Sprintf("%d MiB file: drop → verified event vs tus-js-client 4 (defaults) → tusd 2.9.1", b.o.largeMiB),
			Courier: fmt.Sprintf("%.2f s (%.0f MiB/s)", c, mib/c), Peer: fmt.Sprintf("%.2f s (%.0f MiB/s)", t, mib/t),
			Ratio: c / t, RatioOf: "Courier time / peer time", Goal: "≤ 1.0", Met: c/t <= 1.0, Rounds: courier},
		result{Work: fmt.Sprintf("%d MiB file vs one raw curl PATCH → tusd (the floor)", b.o.largeMiB),
			Courier: fmt.Sprintf("%.2f s", c), Peer: fmt.Sprintf("%.2f s (%.0f MiB/s)", k, mib/k),
			Ratio: c / k, RatioOf: "Courier time / curl time", Goal: "≤ 1.3", Met: c/k <= 1.3, Rounds: courier},
		result{Work: "agent peak RSS during the large file", Courier: fmt.Sprintf("%.1f MiB", median(rss)/(1<<20)), Peer: "—",
			Ratio: median(rss) / (1 << 20), RatioOf: "MiB", Goal: "≤ 64 MiB", Met: median(rss) <= 64<<20, Rounds: rss})
	return nil
}

func (b *bench) smallFiles(ctx context.Context) error {
	n, size := b.o.small, int64(b.o.smallKiB)<<10
	dir := filepath.Join(b.o.work, "small.src")
	os.MkdirAll(dir, 0o700)
	var files, sums []string
	var sizes []int64
	want := map[string]int{}
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("doc-%05d.pdf", i))
		if err := writeRandom(p, size, uint64(i)*7919+1); err != nil {
			return err
		}
		s, _, err := sha256File(p)
		if err != nil {
			return err
		}
		files, sums, sizes = append(files, p), append(sums, s), append(sizes, size)
		want[s]++
	}
	var courier, tusjs, rss []float64
	for r := 0; r < b.o.rounds; r++ {
		order := []string{"courier", "tus-js-client"}
		if r%2 == 1 {
			order = []string{"tus-js-client", "courier"}
		}
		for _, who := range order {
			if who == "courier" {
				s, err := b.courierFiles(ctx, fmt.Sprintf("small-courier-%d", r), func(staging string) (map[string]int, []string, error) {
					var names []string
					for _, f := range files {
						if err := copyFile(f, filepath.Join(staging, filepath.Base(f))); err != nil {
							return nil, nil, err
						}
						names = append(names, filepath.Base(f))
					}
					return want, names, nil
				}, 10*time.Minute)
				if err != nil {
					return err
				}
				courier, rss = append(courier, float64(n)/s.seconds), append(rss, float64(s.rss))
			} else {
				s, err := b.tusJS(ctx, fmt.Sprintf("small-tusjs-%d", r), files, sums, sizes, 4)
				if err != nil {
					return err
				}
				tusjs = append(tusjs, float64(n)/s.seconds)
			}
			b.logf("small round %d %s done", r+1, who)
		}
	}
	c, t := median(courier), median(tusjs)
	b.results = append(b.results,
		result{Work: fmt.Sprintf("%d × %d KiB dropped at once → all verified vs tus-js-client → tusd, 4 at a time", n, b.o.smallKiB),
			Courier: fmt.Sprintf("%.0f files/s", c), Peer: fmt.Sprintf("%.0f files/s", t),
			Ratio: c / t, RatioOf: "Courier rate / peer rate", Goal: "≥ 3.0 (and ≥ 1,000 files/s)", Met: c/t >= 3 && c >= 1000, Rounds: courier},
		result{Work: "agent peak RSS during the small files", Courier: fmt.Sprintf("%.1f MiB", median(rss)/(1<<20)), Peer: "—",
			Ratio: median(rss) / (1 << 20), RatioOf: "MiB", Goal: "≤ 64 MiB", Met: median(rss) <= 64<<20, Rounds: rss})
	return nil
}

var msgsPerSec = regexp.MustCompile(`([0-9.]+) msgs/s`)

// mqtt runs the feed intake benchmark (real Mosquitto, each message fsynced and
// committed before its PUBACK) once per round.
func (b *bench) mqtt(ctx context.Context) error {
	var rates []float64
	for r := 0; r < b.o.rounds; r++ {
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "FeedIntake", "-benchtime", fmt.Sprintf("%dx", b.o.mqttMsgs), "-count", "1", "./agent/mqtt/")
		cmd.Dir = b.o.root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "PATH=/usr/sbin:"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		m := msgsPerSec.FindSubmatch(out)
		if err != nil || m == nil {
			return fmt.Errorf("go test -bench FeedIntake: %v\n%s", err, tail(string(out)))
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		rates = append(rates, v)
		b.logf("mqtt round %d: %.0f msgs/s", r+1, v)
	}
	b.results = append(b.results, result{Work: "MQTT feed intake, 1 KiB messages durably spooled and acknowledged (real Mosquitto)",
		Courier: fmt.Sprintf("%.0f msgs/s", median(rates)), Peer: "—", Ratio: median(rates), RatioOf: "msgs/s", Goal: "(reported)", Met: true, Rounds: rates})
	return nil
}
