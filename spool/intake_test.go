package spool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestReceiveDurableLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	data := append([]byte("%PDF-1.4\n"), make([]byte, 100_000)...)
	rand.Read(data[9:])
	in := Intake{Source: "lab", SourceKind: "folder", SourceRef: "a/b.pdf", Filename: "b.pdf",
		Priority: PriorityHigh, Meta: map[string]string{"k": "v"}}
	it := receive(t, s, in, data)

	if u, err := uuid.Parse(it.ID); err != nil || u.Version() != 7 {
		t.Fatalf("id %q is not a UUIDv7 (%v)", it.ID, err)
	}
	if it.State != StateReceived || it.Size != int64(len(data)) {
		t.Fatalf("item: state %s size %d", it.State, it.Size)
	}
	if it.SHA256 != hexSHA256(data) || it.SHA1 != hexSHA1(data) {
		t.Fatalf("digests %s %s do not match the bytes", it.SHA256, it.SHA1)
	}
	if it.ContentType != "application/pdf" {
		t.Fatalf("content type %q, want application/pdf", it.ContentType)
	}
	want := filepath.Join(dir, "content", it.ID[len(it.ID)-2:], it.ID)
	if s.ContentPath(it.ID) != want {
		t.Fatalf("ContentPath %s, want %s", s.ContentPath(it.ID), want)
	}
	stored, err := os.ReadFile(want)
	if err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("stored bytes differ (%v)", err)
	}
	if left := filesUnder(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(dir, "spool.db")); err != nil {
		t.Fatal(err)
	}

	// It survives a reopen with everything it had.
	s.Close()
	s = openTest(t, Options{Dir: dir})
	got := mustState(t, s, it.ID, StateReceived)
	if got.SHA256 != it.SHA256 || got.SHA1 != it.SHA1 || got.Size != it.Size ||
		got.Priority != PriorityHigh || got.Meta["k"] != "v" || got.SourceRef != "a/b.pdf" ||
		got.Filename != "b.pdf" || got.SourceKind != "folder" || !got.ReceivedAt.Equal(it.ReceivedAt) {
		t.Fatalf("after reopen: %+v\nwant %+v", got, it)
	}
	f, err := s.OpenContent(it.ID)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
}

func TestReceiveEmptyAndSniffed(t *testing.T) {
	s := openTest(t, Options{})
	it := receive(t, s, Intake{Source: "x"}, nil)
	if it.Size != 0 || it.SHA256 != hexSHA256(nil) {
		t.Fatalf("empty file: %+v", it)
	}
	it = receive(t, s, Intake{Source: "x"}, []byte("MSH|^~\\&|LAB|\r"))
	if !strings.HasPrefix(it.ContentType, "text/plain") {
		t.Fatalf("content type %q", it.ContentType)
	}
}

func TestMaxSize(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	in := Intake{Source: "lab", MaxSize: 10}
	if _, err := s.Receive(ctx, in, bytes.NewReader(make([]byte, 11))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("11 bytes over 10: %v, want ErrTooLarge", err)
	}
	src := filepath.Join(t.TempDir(), "big")
	os.WriteFile(src, make([]byte, 11), 0o600)
	if _, err := s.ReceiveFile(ctx, in, src); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReceiveFile: %v, want ErrTooLarge", err)
	}
	if left := filesUnder(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	if left := filesUnder(t, filepath.Join(dir, "content")); len(left) != 0 {
		t.Fatalf("content left: %v", left)
	}
	if items, _ := s.List(ctx, ListFilter{}); len(items) != 0 {
		t.Fatalf("rows left: %d", len(items))
	}
	receive(t, s, in, make([]byte, 10)) // exactly the limit is fine
}

func TestFull(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir, MaxBytes: 1000})
	in := Intake{Source: "lab"}

	// An empty spool takes a file larger than the cap, or it would never get through.
	big := receive(t, s, in, make([]byte, 1500))
	if _, err := s.Receive(ctx, in, bytes.NewReader([]byte("x"))); !errors.Is(err, ErrFull) {
		t.Fatalf("over max_bytes: %v, want ErrFull", err)
	}
	s.w.Exec(`DELETE FROM items WHERE id = ?`, big.ID)
	os.Remove(s.ContentPath(big.ID))

	receive(t, s, in, bytes.Repeat([]byte("a"), 600))
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, bytes.Repeat([]byte("b"), 600), 0o600)
	if _, err := s.ReceiveFile(ctx, in, src); !errors.Is(err, ErrFull) {
		t.Fatalf("ReceiveFile past max_bytes: %v, want ErrFull", err)
	}
	// A stream of unknown size is stopped when it passes the cap.
	if _, err := s.Receive(ctx, in, bytes.NewReader(bytes.Repeat([]byte("c"), 600))); !errors.Is(err, ErrFull) {
		t.Fatalf("stream past max_bytes: %v, want ErrFull", err)
	}
	if left := filesUnder(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	c, _ := s.Counts(ctx)
	if c.ByState[StateReceived] != 1 || c.Bytes != 600 {
		t.Fatalf("counts after ErrFull: %+v", c)
	}
	receive(t, s, in, bytes.Repeat([]byte("d"), 400)) // up to the cap is fine

	s2 := openTest(t, Options{MinFreeDisk: 1 << 62})
	if _, err := s2.Receive(ctx, in, bytes.NewReader([]byte("x"))); !errors.Is(err, ErrFull) {
		t.Fatalf("below min_free_disk: %v, want ErrFull", err)
	}
}

func TestReceiveFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	srcDir := filepath.Join(dir, "inbox") // same filesystem as the spool
	os.Mkdir(srcDir, 0o700)
	for _, name := range []string{"f", "g"} {
		data := make([]byte, 70_000)
		rand.Read(data)
		src := filepath.Join(srcDir, name)
		if err := os.WriteFile(src, data, 0o600); err != nil {
			t.Fatal(err)
		}
		it, err := s.ReceiveFile(ctx, Intake{Source: "lab"}, src)
		if err != nil {
			t.Fatalf("ReceiveFile %s: %v", name, err)
		}
		if it.SHA256 != hexSHA256(data) || it.SHA1 != hexSHA1(data) || it.Size != int64(len(data)) {
			t.Fatalf("%s: digests or size wrong", name)
		}
		a, _ := os.Stat(src)
		b, _ := os.Stat(s.ContentPath(it.ID))
		if os.SameFile(a, b) {
			t.Fatalf("%s: the stored file is the source file, not a copy", name)
		}
		if err := os.Remove(src); err != nil { // the caller releases its own name
			t.Fatal(err)
		}
		stored, err := os.ReadFile(s.ContentPath(it.ID))
		if err != nil || !bytes.Equal(stored, data) {
			t.Fatalf("%s: stored bytes differ after the source went (%v)", name, err)
		}
	}
	if _, err := s.ReceiveFile(ctx, Intake{Source: "lab"}, filepath.Join(srcDir, "missing")); err == nil {
		t.Fatal("missing file: no error")
	}
	if left := filesUnder(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestDedupeDefault(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now, KeepDone: time.Hour})
	lab := Intake{Source: "lab", Fingerprint: "fp1"}
	first := receive(t, s, lab, []byte("same"))
	clk.Advance(time.Second)
	lab.Fingerprint = "fp2"
	dup := receive(t, s, lab, []byte("same"))
	if dup.State != StateDuplicate || dup.DuplicateOf != first.ID {
		t.Fatalf("second copy: state %s of %q, want duplicate of %s", dup.State, dup.DuplicateOf, first.ID)
	}
	if _, err := os.Stat(s.ContentPath(dup.ID)); !os.IsNotExist(err) {
		t.Fatalf("duplicate bytes kept: %v", err)
	}
	if ok, _ := s.HasFingerprint(ctx, "lab", "fp2"); !ok {
		t.Fatal("fingerprint of the duplicate not recorded")
	}
	ev, err := s.Pending(ctx, DefaultSink, 0)
	if err != nil || len(ev) != 1 || ev[0].Type != EventDuplicate || ev[0].Item.DuplicateOf != first.ID {
		t.Fatalf("duplicate event: %+v, %v", ev, err)
	}
	// Another source, other bytes: not duplicates.
	if it := receive(t, s, Intake{Source: "bedside"}, []byte("same")); it.State != StateReceived {
		t.Fatalf("other source: %s", it.State)
	}
	if it := receive(t, s, Intake{Source: "lab"}, []byte("other")); it.State != StateReceived {
		t.Fatalf("other bytes: %s", it.State)
	}
	// A duplicate of a duplicate points at the original.
	if it := receive(t, s, Intake{Source: "lab"}, []byte("same")); it.DuplicateOf != first.ID {
		t.Fatalf("third copy: duplicate of %q, want %s", it.DuplicateOf, first.ID)
	}
	// Past keep_done a finished item no longer makes duplicates.
	finishItem(t, s, first.ID)
	clk.Advance(2 * time.Hour)
	if it := receive(t, s, Intake{Source: "lab"}, []byte("same")); it.State != StateReceived {
		t.Fatalf("after keep_done: %s, want received", it.State)
	}
	// A rejected item never makes duplicates.
	if _, err := s.Reject(ctx, Intake{Source: "r"}, 3, "policy"); err != nil {
		t.Fatal(err)
	}
}

// finishItem walks an item through upload and publishing to done.
func finishItem(t testing.TB, s *Spool, id string) {
	t.Helper()
	ctx := context.Background()
	for {
		it, err := s.Lease(ctx, "finisher", time.Hour)
		if err != nil {
			t.Fatalf("Lease for %s: %v", id, err)
		}
		if it.ID != id {
			if err := s.Release(ctx, it.ID, "finisher"); err != nil {
				t.Fatal(err)
			}
			// Park others far in the future so the wanted one comes up.
			if _, err := s.w.Exec(`UPDATE items SET state = 'waiting', next_attempt = ? WHERE id = ?`,
				int64(1<<62), it.ID); err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	if err := s.MarkVerified(ctx, id, "finisher", "http://x/"+id); err != nil {
		t.Fatal(err)
	}
	for _, sink := range s.sinks {
		evs, err := s.Pending(ctx, sink, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.ItemID == id {
				if err := s.MarkPublished(ctx, ev.Seq); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	mustState(t, s, id, StateDone)
}

// kvInspector reads "key=value" lines, a stand-in for agent/hl7.
func kvInspector(path string) *Envelope {
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("dk=")) {
		return nil
	}
	env := &Envelope{Data: json.RawMessage(`{"message_type":"ORU^R01"}`)}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "dk":
			env.DedupeKey = v
		case "ck":
			env.ContentKey = v
		case "ok":
			env.OrderKey = v
		case "corr":
			env.IsCorrection = v == "1"
		case "ct":
			env.ContentType = v
		case "panic":
			panic("inspector bug")
		}
	}
	return env
}

func TestDedupeEnvelope(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openTest(t, Options{Now: clk.Now, Inspect: kvInspector})
	recv := func(src, body string) *Item {
		clk.Advance(time.Second)
		return receive(t, s, Intake{Source: src}, []byte(body))
	}
	orig := recv("lab", "dk=LAB|F|1\nck=A\nok=LAB|F|O1\nct=x-application/hl7-v2+er7\nsend=1")
	if orig.State != StateReceived || orig.ContentType != "x-application/hl7-v2+er7" || orig.ControlIDReused {
		t.Fatalf("original: %+v", orig)
	}
	// Resend with a new send time: other bytes, same keys, any source.
	resend := recv("bedside", "dk=LAB|F|1\nck=A\nok=LAB|F|O1\nsend=2")
	if resend.State != StateDuplicate || resend.DuplicateOf != orig.ID {
		t.Fatalf("resend: state %s of %q", resend.State, resend.DuplicateOf)
	}
	// Control id reused with other content: kept and flagged.
	reused := recv("lab", "dk=LAB|F|1\nck=B\nok=LAB|F|O9")
	if reused.State != StateReceived || !reused.ControlIDReused {
		t.Fatalf("reused control id: state %s reused %v", reused.State, reused.ControlIDReused)
	}
	var data map[string]any
	if err := json.Unmarshal(reused.Envelope, &data); err != nil {
		t.Fatal(err)
	}
	if data["control_id_reused"] != true || data["corrects"] != nil || data["message_type"] != "ORU^R01" {
		t.Fatalf("envelope data: %v", data)
	}
	// Identical bytes of the original are also a duplicate (same keys).
	if it := recv("lab", "dk=LAB|F|1\nck=A\nok=LAB|F|O1\nct=x-application/hl7-v2+er7\nsend=1"); it.State != StateDuplicate {
		t.Fatalf("identical bytes: %s", it.State)
	}
	// Corrections point at the latest earlier item of the order.
	c1 := recv("lab", "dk=LAB|F|2\nck=C\nok=LAB|F|O1\ncorr=1")
	if c1.Corrects != orig.ID {
		t.Fatalf("first correction corrects %q, want %s", c1.Corrects, orig.ID)
	}
	c2 := recv("lab", "dk=LAB|F|3\nck=D\nok=LAB|F|O1\ncorr=1")
	if c2.Corrects != c1.ID {
		t.Fatalf("second correction corrects %q, want %s", c2.Corrects, c1.ID)
	}
	json.Unmarshal(c2.Envelope, &data)
	if data["corrects"] != c1.ID {
		t.Fatalf("envelope corrects: %v", data["corrects"])
	}
	got := mustState(t, s, c2.ID, StateReceived)
	if got.Corrects != c1.ID || string(got.Envelope) != string(c2.Envelope) {
		t.Fatalf("stored: corrects %q envelope %s", got.Corrects, got.Envelope)
	}
	// A correction with nothing to correct.
	if it := recv("lab", "dk=LAB|F|4\nck=E\nok=NEW\ncorr=1"); it.Corrects != "" {
		t.Fatalf("orphan correction corrects %q", it.Corrects)
	}
	// A dedupe key without a content key falls back to the bytes.
	a := recv("lab", "dk=K5\nx=1")
	if b := recv("lab", "dk=K5\nx=2"); b.State != StateReceived || !b.ControlIDReused {
		t.Fatalf("no content key, other bytes: %s reused %v", b.State, b.ControlIDReused)
	}
	if c := recv("other", "dk=K5\nx=1"); c.DuplicateOf != a.ID {
		t.Fatalf("no content key, same bytes: %s of %q", c.State, c.DuplicateOf)
	}
	// A panicking inspector does not fail the intake.
	if it := recv("lab", "dk=P\npanic=1"); it.State != StateReceived || it.Envelope != nil {
		t.Fatalf("panicking inspector: %+v", it)
	}
	_ = ctx
}

func TestRejectAndFingerprint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir, Sinks: []string{"file", "mqtt"}})
	in := Intake{Source: "lab", SourceKind: "folder", Filename: "huge.bin", Fingerprint: "ino:1:mtime:2"}
	it, err := s.Reject(ctx, in, 5<<30, "over max_size 2GiB")
	if err != nil {
		t.Fatal(err)
	}
	got := mustState(t, s, it.ID, StateRejected)
	if got.Reason != "over max_size 2GiB" || got.Size != 5<<30 {
		t.Fatalf("rejected item: %+v", got)
	}
	for _, sink := range []string{"file", "mqtt"} {
		evs, err := s.Pending(ctx, sink, 10)
		if err != nil || len(evs) != 1 || evs[0].Type != EventRejected || evs[0].ItemID != it.ID {
			t.Fatalf("%s: %+v %v", sink, evs, err)
		}
	}
	if left := filesUnder(t, filepath.Join(dir, "content")); len(left) != 0 {
		t.Fatalf("content for a rejected file: %v", left)
	}
	c, _ := s.Counts(ctx)
	if c.Bytes != 0 || c.ByState[StateRejected] != 1 {
		t.Fatalf("counts: %+v", c)
	}
	if ok, err := s.HasFingerprint(ctx, "lab", "ino:1:mtime:2"); !ok || err != nil {
		t.Fatalf("fingerprint of rejected: %v %v", ok, err)
	}
	receive(t, s, Intake{Source: "lab", Fingerprint: "fp-b"}, []byte("b"))
	for _, tc := range []struct {
		source, fp string
		want       bool
	}{{"lab", "fp-b", true}, {"other", "fp-b", false}, {"lab", "fp-c", false}} {
		if ok, err := s.HasFingerprint(ctx, tc.source, tc.fp); ok != tc.want || err != nil {
			t.Errorf("HasFingerprint(%s, %s) = %v, %v", tc.source, tc.fp, ok, err)
		}
	}
}

func TestConcurrentSameContentOneOriginal(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	const n = 8
	items := make(chan *Item, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			it, err := s.Receive(ctx, Intake{Source: "lab"}, bytes.NewReader([]byte("same bytes")))
			items <- it
			errs <- err
		}()
	}
	var originals []string
	var dups []*Item
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		it := <-items
		if it.State == StateReceived {
			originals = append(originals, it.ID)
		} else {
			dups = append(dups, it)
		}
	}
	if len(originals) != 1 {
		t.Fatalf("%d originals of the same bytes, want 1", len(originals))
	}
	for _, d := range dups {
		if d.State != StateDuplicate || d.DuplicateOf != originals[0] {
			t.Fatalf("copy: %s of %q, want duplicate of %s", d.State, d.DuplicateOf, originals[0])
		}
	}
}

// A file kept in its folder (after: keep) stays known after its item row is swept;
// PruneFingerprints forgets only files no longer present.
func TestFingerprintsOutliveSweep(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	s, err := Open(ctx, Options{Dir: t.TempDir(), KeepDone: time.Hour, Sinks: []string{"file"}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, fp := range []string{"still-there", "gone"} {
		if _, err := s.Reject(ctx, Intake{Source: "lab", SourceKind: "folder", Fingerprint: fp}, 1, "test"); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Pending(ctx, "file", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := s.MarkPublished(ctx, ev.Seq); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Hour)
	if n, err := s.Sweep(ctx); err != nil || n != 2 {
		t.Fatalf("sweep: %d, %v; want 2 rows", n, err)
	}
	for _, fp := range []string{"still-there", "gone"} {
		if ok, err := s.HasFingerprint(ctx, "lab", fp); !ok || err != nil {
			t.Fatalf("fingerprint %s lost with its swept item: %v", fp, err)
		}
	}
	if n, err := s.PruneFingerprints(ctx, "lab", map[string]bool{"still-there": true}); err != nil || n != 1 {
		t.Fatalf("prune: %d, %v; want 1", n, err)
	}
	if ok, _ := s.HasFingerprint(ctx, "lab", "still-there"); !ok {
		t.Error("fingerprint of a file still present was pruned")
	}
	if ok, _ := s.HasFingerprint(ctx, "lab", "gone"); ok {
		t.Error("fingerprint of a file gone was kept")
	}
}

// A source with hl7: off is never read by the inspector: its files dedupe by
// source and digest only and carry no envelope.
func TestNoInspect(t *testing.T) {
	s := openTest(t, Options{Inspect: kvInspector})
	body := []byte("dk=LAB|F|1\nck=A")
	off := receive(t, s, Intake{Source: "scanner", NoInspect: true}, body)
	if off.Envelope != nil || off.ContentType == "x-application/hl7-v2+er7" {
		t.Fatalf("NoInspect item was inspected: %+v", off)
	}
	on := receive(t, s, Intake{Source: "lab"}, body)
	if on.Envelope == nil {
		t.Fatal("inspected item has no envelope: the test's inspector did not run")
	}
}

// A symlink handed in as a file is not followed: whatever it points at stays out.
func TestReceiveFileRefusesSymlink(t *testing.T) {
	s := openTest(t, Options{})
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("not for upload"), 0o600)
	link := filepath.Join(dir, "inbox-file")
	if err := os.Symlink(secret, link); err != nil {
		t.Skip("no symlinks here:", err)
	}
	if it, err := s.ReceiveFile(context.Background(), Intake{Source: "lab"}, link); err == nil {
		t.Fatalf("symlink received as item %s", it.ID)
	}
	if items, _ := s.List(context.Background(), ListFilter{}); len(items) != 0 {
		t.Fatalf("%d items stored from a symlink", len(items))
	}
}
