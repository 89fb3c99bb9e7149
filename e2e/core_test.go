package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgecourier/courier/internal/testutil"
)

const chunk = 256 << 10

// TestFolderToVerifiedEvent is the core journey: every kind of file dropped in a
// watched folder arrives at the server byte for byte and is announced once.
func TestFolderToVerifiedEvent(t *testing.T) {
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url()})
	metricsAddr := testutil.FreePort(t)
	writeText(t, e.cfgPath, strings.Replace(string(mustRead(t, e.cfgPath)), `listen: "off"`, "listen: "+metricsAddr, 1))
	e.startAgent()

	files := map[string][]byte{
		"empty.bin":                               {},
		"one.bin":                                 {42},
		"under-chunk.bin":                         randBytes(chunk-1, 1),
		"exact-chunk.bin":                         randBytes(chunk, 2),
		"over-chunk.bin":                          randBytes(chunk+1, 3),
		"big-20MiB.bin":                           randBytes(20<<20, 4),
		"lab/2026/11/nested.pdf":                  append([]byte("%PDF-1.4\n"), randBytes(5000, 5)...),
		"befund-Müller-äöü-日本語.txt":               []byte("unicode name, ascii body\n"),
		strings.Repeat("long-name-", 24) + ".dat": randBytes(777, 6),
	}
	for name, b := range files {
		writeFile(t, filepath.Join(e.inbox, name), b)
	}
	// A folder created after start-up, with a file already in it when it is first seen.
	writeFile(t, filepath.Join(e.inbox, "later", "deeper", "late.bin"), randBytes(1234, 7))
	files["later/deeper/late.bin"] = randBytes(1234, 7)

	got := e.waitVerified(len(files), 3*time.Minute)
	for name, b := range files {
		ev, ok := got[sum(b)]
		if !ok {
			t.Errorf("%s: no verified event", name)
			continue
		}
		if ev.Data.Size != int64(len(b)) {
			t.Errorf("%s: event size %d, want %d", name, ev.Data.Size, len(b))
		}
		if stored := in.object(t, ev.Data.FileID); !bytes.Equal(stored, b) {
			t.Errorf("%s: bytes at the server differ from the source (%d vs %d bytes)", name, len(stored), len(b))
		}
		if ev.ID != ev.Data.FileID+".verified" || ev.Subject != ev.Data.FileID {
			t.Errorf("%s: event id %q / subject %q do not derive from file id %q", name, ev.ID, ev.Subject, ev.Data.FileID)
		}
		if ev.Data.Filename != "" || strings.Contains(ev.raw, "Müller") {
			t.Errorf("%s: event carries the file name although privacy.send_filenames is off: %s", name, ev.raw)
		}
	}
	// Sources are released (after: delete) once the item is durable.
	testutil.WaitFor(t, time.Minute, "inbox to be emptied", func() bool {
		n := 0
		filepath.WalkDir(e.inbox, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
		return n == 0
	})
	assertOneEventPerFile(t, e, contentsOf(files)...)
	if n := len(in.objects(t)); n != len(files) {
		t.Errorf("server holds %d objects, want %d", n, len(files))
	}
	if out, code := e.courier("status", "--config", e.cfgPath, "--json"); code != 0 || !strings.Contains(out, `"done"`) {
		t.Errorf("courier status: exit %d\n%s", code, out)
	}
	want := fmt.Sprintf(`courier_items{state="done"} %d`, len(files))
	testutil.WaitFor(t, 30*time.Second, "/metrics to count every file done", func() bool {
		return strings.Contains(httpGet(t, "http://"+metricsAddr+"/metrics"), want)
	})
	for _, p := range []string{"/healthz", "/readyz"} {
		if body := httpGet(t, "http://"+metricsAddr+p); body == "" {
			t.Errorf("%s: no answer", p)
		}
	}
}

// httpGet returns the body of a 200 answer, "" otherwise.
func httpGet(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// assertOneEventPerFile: each of the source contents was announced verified exactly
// once: one file id and one event id carry its SHA-256 (a copy taken twice, or an
// upload restarted as a new item, shows as a second file id). Every file id also
// has exactly one event id per event type.
func assertOneEventPerFile(t *testing.T, e *env, contents ...[]byte) {
	t.Helper()
	if len(contents) == 0 {
		t.Fatal("assertOneEventPerFile: no contents to check")
	}
	fileIDs := map[string]map[string]bool{}  // sha256 -> file ids of verified events
	eventIDs := map[string]map[string]bool{} // sha256 -> verified event ids
	perType := map[string]map[string]bool{}  // file id + type -> event ids
	for _, ev := range e.readEvents() {
		k := ev.Data.FileID + " " + ev.Type
		if perType[k] == nil {
			perType[k] = map[string]bool{}
		}
		perType[k][ev.ID] = true
		if ev.Type != "org.edgecourier.file.verified.v1" {
			continue
		}
		if fileIDs[ev.Data.SHA256] == nil {
			fileIDs[ev.Data.SHA256], eventIDs[ev.Data.SHA256] = map[string]bool{}, map[string]bool{}
		}
		fileIDs[ev.Data.SHA256][ev.Data.FileID] = true
		eventIDs[ev.Data.SHA256][ev.ID] = true
	}
	for _, b := range contents {
		d := sum(b)
		if len(fileIDs[d]) != 1 || len(eventIDs[d]) != 1 {
			t.Errorf("content %.12s (%d bytes): %d verified file id(s) and %d event id(s), want exactly 1 each",
				d, len(b), len(fileIDs[d]), len(eventIDs[d]))
		}
	}
	for k, set := range perType {
		if len(set) != 1 {
			t.Errorf("%s: %d distinct event ids, want 1", k, len(set))
		}
	}
}

// contentsOf lists a map's values, for assertOneEventPerFile.
func contentsOf(files map[string][]byte) [][]byte {
	out := make([][]byte, 0, len(files))
	for _, b := range files {
		out = append(out, b)
	}
	return out
}

// TestSettleAndOddFiles: a growing file is taken once, complete; a file deleted
// before it settles is forgotten; a symlink out of the root is not followed; a
// FIFO does not hang the agent.
func TestSettleAndOddFiles(t *testing.T) {
	in := startIngest(t, t.TempDir(), "")
	e := newEnv(t, agentConf{Endpoint: in.url(), Settle: "3s"}) // writes come every 200 ms: far inside settle even on a loaded machine
	outside := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(outside, []byte("outside the watched root"), 0o644)
	if err := os.Symlink(outside, filepath.Join(e.inbox, "link-out.txt")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(e.inbox, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.startAgent()

	// Grows for ~4 s in 200 ms steps.
	grow := filepath.Join(e.inbox, "growing.bin")
	f, err := os.Create(grow)
	if err != nil {
		t.Fatal(err)
	}
	var whole []byte
	for i := 0; i < 20; i++ {
		b := randBytes(64<<10, byte(i))
		f.Write(b)
		whole = append(whole, b...)
		time.Sleep(200 * time.Millisecond)
	}
	f.Close()
	// Appears and vanishes before it could settle.
	gone := filepath.Join(e.inbox, "gone.bin")
	os.WriteFile(gone, randBytes(100, 9), 0o644)
	time.Sleep(300 * time.Millisecond)
	os.Remove(gone)
	ok := []byte("after the odd ones")
	writeFile(t, filepath.Join(e.inbox, "ok.txt"), ok)

	got := e.waitVerified(2, 2*time.Minute)
	if _, found := got[sum(whole)]; !found {
		t.Errorf("growing file: no verified event for its final content; got %d events", len(got))
	}
	if _, found := got[sum(ok)]; !found {
		t.Errorf("ok.txt: no verified event")
	}
	time.Sleep(3 * time.Second) // one more rescan: nothing else may appear
	for _, ev := range e.readEvents() {
		if ev.Type == "org.edgecourier.file.verified.v1" && ev.Data.SHA256 != sum(whole) && ev.Data.SHA256 != sum(ok) {
			t.Errorf("unexpected verified file (size %d): a partial growing file, the deleted file or the symlink target", ev.Data.Size)
		}
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "outside the watched root" {
		t.Errorf("symlink target outside the root was touched: %v", err)
	}
	assertOneEventPerFile(t, e, whole, ok)
}

// TestCrashMidUpload: SIGKILL the agent in the middle of a large upload; after a
// restart the upload resumes, the server holds the file once, one event id, and
// at most about one chunk is sent twice.
func TestCrashMidUpload(t *testing.T) {
	skipOnWindows(t)
	in := startIngest(t, t.TempDir(), "")
	px := startProxy(t, "http://"+in.addr)
	const size = 12 << 20
	const chunkSize = 1 << 20
	e := newEnv(t, agentConf{Endpoint: px.url(), Chunk: "1MiB", Bandwidth: "3MiB"})
	body := randBytes(size, 77)
	writeFile(t, filepath.Join(e.inbox, "scan.bin"), body)

	a := e.startAgent()
	testutil.WaitFor(t, 2*time.Minute, "a third of the file at the server", func() bool { return px.patchBytes.Load() > size/3 })
	a.kill()
	sentBefore := px.patchBytes.Load()
	if sentBefore >= size {
		t.Fatalf("the upload finished before the kill (%d bytes sent); nothing was tested", sentBefore)
	}
	assertResumed(t, e, in, px, body, int64(chunkSize), "killed", sentBefore)
}

// assertResumed restarts the agent after an interrupted upload and checks the
// outcome: one object equal to the source, one event id, and at most about one
// chunk sent twice.
func assertResumed(t *testing.T, e *env, in *ingest, px *proxy, body []byte, chunkSize int64, how string, sentBefore int64) {
	t.Helper()
	e.startAgent()
	got := e.waitVerified(1, 3*time.Minute)
	ev := got[sum(body)]
	if ev.ID == "" {
		t.Fatal("no verified event for the file")
	}
	if stored := in.object(t, ev.Data.FileID); !bytes.Equal(stored, body) {
		t.Fatalf("bytes at the server differ from the source")
	}
	if n := len(in.objects(t)); n != 1 {
		t.Errorf("server holds %d objects, want 1", n)
	}
	assertOneEventPerFile(t, e, body)
	resent := px.patchBytes.Load() - int64(len(body))
	t.Logf("%s after %d bytes; %d bytes sent twice (chunk %d)", how, sentBefore, resent, chunkSize)
	if resent > chunkSize+chunkSize/4 {
		t.Errorf("%d bytes were sent twice after the restart, want at most about one chunk (%d)", resent, chunkSize)
	}
}

// TestCorruptedChunkIsResent: a byte flipped in one PATCH body is caught by the
// chunk checksum (460), the chunk is sent again, and the object is right.
func TestCorruptedChunkIsResent(t *testing.T) {
	in := startIngest(t, t.TempDir(), "")
	px := startProxy(t, "http://"+in.addr)
	e := newEnv(t, agentConf{Endpoint: px.url(), Chunk: "256KiB"})
	body := randBytes(3<<20, 11)
	px.corruptNext.Store(true)
	e.startAgent()
	writeFile(t, filepath.Join(e.inbox, "report.bin"), body)
	got := e.waitVerified(1, 2*time.Minute)
	ev := got[sum(body)]
	if px.corrupted.Load() != 1 {
		t.Fatalf("the proxy corrupted %d chunks, want 1", px.corrupted.Load())
	}
	if px.status460.Load() < 1 {
		t.Errorf("the server did not answer 460 to the corrupted chunk")
	}
	if stored := in.object(t, ev.Data.FileID); !bytes.Equal(stored, body) {
		t.Fatalf("bytes at the server differ from the source")
	}
	assertOneEventPerFile(t, e, body)
}
