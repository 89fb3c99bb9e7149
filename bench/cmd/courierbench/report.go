//go:build !windows

package main

import (
	"bytes"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func (b *bench) report() error {
	var md bytes.Buffer
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	fmt.Fprintf(&md, "# Benchmarks\n\nMade by `make bench` (`go run ./bench/cmd/courierbench`): Courier against the tools a clinic\n")
	fmt.Fprintf(&md, "would pick instead, in one run, contenders alternating round by round; medians of %d rounds.\n", b.o.rounds)
	fmt.Fprintf(&md, "Every transfer is checked (exit status, HTTP status, stored size and SHA-256): a failed upload\nis an error, never a fast time. Ratios are the goals; absolute numbers depend on the machine.\n\n")
	fmt.Fprintf(&md, "- date: %s\n- version: %s\n- machine: %s, %d cores (%s), %s/%s, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), b.version, cpu, runtime.NumCPU(), host, runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(&md, "- peers: stock tusd v2.9.1 (`go install %s`, file store, same disk), tus-js-client 4 with default options (`npm install %s`), curl\n", tusdModule, tusJSClientPkg)
	fmt.Fprintf(&md, "- Courier: `courier run` + `courier-ingest` (file store) on loopback, chunk 8 MiB, `settle: 100ms` (files arrive by rename), `after: delete`\n\n")
	fmt.Fprintf(&md, "| work | Courier (median) | peer (median) | ratio | goal | met |\n|---|---|---|---|---|---|\n")
	for _, r := range b.results {
		met := "yes"
		if !r.Met {
			met = "**no**"
		}
		fmt.Fprintf(&md, "| %s | %s | %s | %.2f (%s) | %s | %s |\n", r.Work, r.Courier, r.Peer, r.Ratio, r.RatioOf, r.Goal, met)
	}
	fmt.Fprintf(&md, "\nCourier's rounds (seconds, files/s, msgs/s or bytes, per line above):\n\n")
	for _, r := range b.results {
		var vs []string
		for _, v := range r.Rounds {
			vs = append(vs, fmt.Sprintf("%.3g", v))
		}
		fmt.Fprintf(&md, "- %s: %s\n", r.Work, strings.Join(vs, ", "))
	}
	fmt.Fprintf(&md, "\n![ratios](%s)\n", filepath.Base(b.o.chart))
	os.Stdout.Write(md.Bytes())
	if err := os.MkdirAll(filepath.Dir(b.o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.o.out, md.Bytes(), 0o644); err != nil {
		return err
	}
	return b.plot()
}

// plot draws, for each speed goal, the measured advantage and the goal, both as
// "how many times better than the peer" (higher is better).
func (b *bench) plot() error {
	var labels []string
	var got, goal plotter.Values
	for _, r := range b.results {
		switch {
		case strings.Contains(r.RatioOf, "time /"):
			labels = append(labels, shortName(r.Work))
			got = append(got, 1/r.Ratio)
			g := 1.0
			if strings.Contains(r.Goal, "1.3") {
				g = 1 / 1.3
			}
			goal = append(goal, g)
		case strings.Contains(r.RatioOf, "rate /"):
			labels = append(labels, shortName(r.Work))
			got = append(got, r.Ratio)
			goal = append(goal, 3)
		}
	}
	if len(got) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = "Courier vs peer, same run (higher is better)"
	p.Y.Label.Text = "× the peer's speed"
	w := vg.Points(22)
	gb, err := plotter.NewBarChart(got, w)
	if err != nil {
		return err
	}
	gb.Color = color.RGBA{R: 30, G: 110, B: 200, A: 255}
	gb.Offset = -w / 2
	gl, err := plotter.NewBarChart(goal, w)
	if err != nil {
		return err
	}
	gl.Color = color.RGBA{R: 190, G: 190, B: 190, A: 255}
	gl.Offset = w / 2
	p.Add(gb, gl)
	p.Legend.Add("measured", gb)
	p.Legend.Add("goal", gl)
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(labels...)
	return p.Save(7*vg.Inch, 4*vg.Inch, b.o.chart)
}

func shortName(work string) string {
	switch {
	case strings.Contains(work, "tus-js-client") && strings.Contains(work, "MiB file"):
		return "large vs tus-js-client"
	case strings.Contains(work, "curl"):
		return "large vs curl PATCH"
	case strings.Contains(work, "files/s") || strings.Contains(work, "dropped at once"):
		return "small files vs tus-js-client"
	}
	return work
}
