package ingest

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkIngest sends one 64 MiB file in 8 MiB chunks (sha256 chunk
// checksums, whole-file digest) through the file store and through the S3
// store (versitygw on loopback) in the same run, and reports both rates,
// their ratio, and the CPU time this process (client and ingest; versitygw
// is another process) spent per MiB, which a busy machine disturbs less:
//
//	go test -run '^$' -bench BenchmarkIngest -benchtime 3x ./ingest/
func BenchmarkIngest(b *testing.B) {
	const size, chunk = 64 << 20, 8 << 20
	base := newUpload(size)
	gw := startS3Bench(b)
	fileSrv := startServer(b, Options{})
	s3Srv := startServer(b, Options{Store: gw.StoreURL()})

	var fileTime, s3Time, fileCPU, s3CPU time.Duration
	b.SetBytes(2 * size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, target := range []struct {
			ts  *testServer
			sum *time.Duration
			cpu *time.Duration
		}{{fileSrv, &fileTime, &fileCPU}, {s3Srv, &s3Time, &s3CPU}} {
			u := base
			id, _ := uuid.NewV7()
			u.id = id.String()
			start, cpu := time.Now(), processCPU()
			loc := target.ts.create(u)
			var resp *http.Response
			for off := 0; off < size; off += chunk {
				part := u.data[off : off+chunk]
				req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(part))
				req.Header.Set("Tus-Resumable", "1.0.0")
				req.Header.Set("Content-Type", "application/offset+octet-stream")
				req.Header.Set("Upload-Offset", strconv.Itoa(off))
				req.Header.Set("Upload-Checksum", checksum("sha256", part))
				resp = target.ts.do(req)
				if resp.StatusCode != http.StatusNoContent {
					b.Fatalf("PATCH: %d", resp.StatusCode)
				}
			}
			if resp.Header.Get("Courier-Sha256") != u.digest {
				b.Fatal("not verified")
			}
			*target.sum += time.Since(start)
			*target.cpu += processCPU() - cpu
		}
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(fileTime), "file-MB/s")
	b.ReportMetric(mbps(s3Time), "s3-MB/s")
	b.ReportMetric(mbps(s3Time)/mbps(fileTime), "s3/file")
	perMiB := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(size>>20) / float64(b.N) }
	b.ReportMetric(perMiB(fileCPU), "file-cpu-ms/MiB")
	b.ReportMetric(perMiB(s3CPU), "s3-cpu-ms/MiB")
}
