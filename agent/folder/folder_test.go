package folder

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgecourier/courier/internal/testutil"
	"github.com/edgecourier/courier/spool"
)

func TestValidate(t *testing.T) {
	ok := Options{Name: "a", Path: "/x"}
	tests := []struct {
		name string
		mod  func(*Options)
		want string // "" = valid
	}{
		{"minimal", func(*Options) {}, ""},
		{"all set", func(o *Options) {
			o.Include, o.Exclude, o.Settle, o.After, o.MaxSize, o.Rescan = []string{"*.hl7"}, []string{}, time.Second, "move:/y", 10, time.Minute
		}, ""},
		{"keep", func(o *Options) { o.After = "keep" }, ""},
		{"no name", func(o *Options) { o.Name = "" }, "name: must be set"},
		{"no path", func(o *Options) { o.Path = "" }, "path: must be set"},
		{"bad include", func(o *Options) { o.Include = []string{"*", "[x"} }, `include[1]: bad pattern "[x"`},
		{"bad exclude", func(o *Options) { o.Exclude = []string{"[x"} }, `exclude[0]: bad pattern "[x"`},
		{"negative settle", func(o *Options) { o.Settle = -2 * time.Second }, `settle: must be > 0, got "-2s"`},
		{"negative rescan", func(o *Options) { o.Rescan = -time.Second }, `rescan: must be > 0, got "-1s"`},
		{"negative max", func(o *Options) { o.MaxSize = -1 }, "max_size: must be >= 0, got -1"},
		{"bad after", func(o *Options) { o.After = "shred" }, `after: must be delete, keep or move:DIR, got "shred"`},
		{"move nowhere", func(o *Options) { o.After = "move:" }, `after: move needs a folder`},
		{"move onto root", func(o *Options) { o.After = "move:/x/" }, `after: move target must not be the watched folder`},
		{"bad priority", func(o *Options) { o.Priority = 7 }, "priority: must be high, normal or low, got 7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.mod(&o)
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate: nil, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate: %q, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := New(Options{Name: "a"}, nil); err == nil || !strings.Contains(err.Error(), "path") {
		t.Fatalf("New without path: %v", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	writeFile(t, f, nil)
	if _, err := New(Options{Name: "a", Path: f}, openSpool(t, spool.Options{})); err == nil {
		t.Fatalf("New with a file as path: no error")
	}
}

// Files present at start-up, in nested folders, in folders created later (empty, then
// filled; and moved in already full), all taken with their exact bytes and deleted.
func TestNestedAndLaterFolders(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	files := map[string][]byte{
		"top.hl7":         []byte("MSH|top"),
		"a/b/c/deep.pdf":  bytes.Repeat([]byte("%PDF-1.4 deep "), 1000),
		"a/sibling.txt":   []byte("sibling"),
		"other/empty.dat": {},
	}
	for rel, data := range files {
		writeFile(t, filepath.Join(root, rel), data)
	}
	r := startSource(t, testOptions(t, root), sp)
	for rel := range files {
		waitItem(t, sp, rel, spool.StateReceived, spool.StateDuplicate)
	}

	// A folder tree created while running; files written into it at once.
	later := map[string][]byte{
		"new/x/y/z/later.txt": []byte("written right after mkdir"),
		"new/x/first.txt":     []byte("first"),
	}
	for rel, data := range later {
		writeFile(t, filepath.Join(root, rel), data)
	}
	// A folder filled elsewhere and renamed in: only its own Create event says so.
	outside := filepath.Join(t.TempDir(), "batch")
	for i := range 5 {
		writeFile(t, filepath.Join(outside, "sub", fmt.Sprintf("f%d.txt", i)), []byte(fmt.Sprint("batch ", i)))
		later[fmt.Sprintf("moved-in/sub/f%d.txt", i)] = []byte(fmt.Sprint("batch ", i))
	}
	if err := os.Rename(outside, filepath.Join(root, "moved-in")); err != nil {
		t.Fatal(err)
	}
	for rel := range later {
		files[rel] = later[rel]
	}
	for rel, data := range files {
		it := waitItem(t, sp, rel, spool.StateReceived, spool.StateDuplicate)
		if it.Filename != filepath.Base(rel) || it.Source != "lab-inbox" || it.SourceKind != "folder" {
			t.Errorf("%s: item has filename %q source %q kind %q", rel, it.Filename, it.Source, it.SourceKind)
		}
		if it.SHA256 != digest(data) || it.Size != int64(len(data)) {
			t.Errorf("%s: item has sha256 %s size %d, want %s %d", rel, it.SHA256, it.Size, digest(data), len(data))
		}
		if it.State == spool.StateReceived && !bytes.Equal(storedBytes(t, sp, it.ID), data) {
			t.Errorf("%s: stored bytes differ from the file", rel)
		}
		testutil.WaitFor(t, waitTimeout, rel+" deleted from the folder", func() bool { return gone(filepath.Join(root, rel)) })
	}
	if st := r.counters(); st.Taken != int64(len(files)) || st.Rejected != 0 || !st.Watching {
		t.Errorf("stats %+v, want %d taken, watching", st, len(files))
	}
	// Folders stay; only files are taken.
	if !exists(filepath.Join(root, "new/x/y/z")) {
		t.Errorf("sub-folder was removed")
	}
}

// A folder renamed within the tree is watched under its new name (no rescan helps here).
func TestFolderRenamedWithinTree(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	if err := os.MkdirAll(filepath.Join(root, "old/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t, root)
	opts.Rescan = time.Hour
	r := startSource(t, opts, sp)
	testutil.WaitFor(t, waitTimeout, "folders watched", func() bool { return r.counters().Folders == 3 })
	if err := os.Rename(filepath.Join(root, "old"), filepath.Join(root, "new")); err != nil {
		t.Fatal(err)
	}
	// Poll: the rename's events may still be on their way when the first file is written.
	for i := 0; ; i++ {
		rel := fmt.Sprintf("new/sub/f%d.txt", i)
		writeFile(t, filepath.Join(root, rel), []byte(rel))
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && len(itemsFor(t, sp, rel)) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		if len(itemsFor(t, sp, rel)) > 0 {
			break
		}
		if i == 5 {
			t.Fatalf("files in the renamed folder are never taken")
		}
	}
	rel := "new/sub/after.txt"
	writeFile(t, filepath.Join(root, rel), []byte("after"))
	waitItem(t, sp, rel, spool.StateReceived)
}

// 0-byte files, unicode names and a 255-byte base name.
func TestOddNames(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	long := strings.Repeat("ü", 125) + "12345" // 255 bytes
	if len(long) != 255 {
		t.Fatalf("long name is %d bytes", len(long))
	}
	files := map[string][]byte{
		"empty.hl7":                 {},
		"Ärztebrief_Ωμέγα_日本.pdf":   []byte("unicode"),
		"dir ü/" + long:             []byte("long name"),
		"with space & (parens).txt": []byte("spaces"),
	}
	for rel, data := range files {
		writeFile(t, filepath.Join(root, rel), data)
	}
	startSource(t, testOptions(t, root), sp)
	for rel, data := range files {
		it := waitItem(t, sp, rel, spool.StateReceived)
		if it.Filename != filepath.Base(rel) || it.SHA256 != digest(data) || it.Size != int64(len(data)) {
			t.Errorf("%s: got filename %q sha %s size %d", rel, it.Filename, it.SHA256, it.Size)
		}
		testutil.WaitFor(t, waitTimeout, rel+" deleted", func() bool { return gone(filepath.Join(root, rel)) })
	}
}

// A file written for a few seconds is taken once, complete.
func TestGrowingFileTakenOnceComplete(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	opts := testOptions(t, root)
	opts.Settle = 1500 * time.Millisecond
	opts.Rescan = 500 * time.Millisecond // rescans during the writes must not take it early either
	r := startSource(t, opts, sp)

	p := filepath.Join(root, "growing.bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for i := 0; time.Duration(i)*100*time.Millisecond < 3*time.Second; i++ {
		chunk[0] = byte(i)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		all.Write(chunk)
		time.Sleep(100 * time.Millisecond)
		if its := itemsFor(t, sp, "growing.bin"); len(its) > 0 {
			t.Fatalf("taken after %d of the writes, size %d", i+1, its[0].Size)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	it := waitItem(t, sp, "growing.bin", spool.StateReceived)
	if it.SHA256 != digest(all.Bytes()) || it.Size != int64(all.Len()) {
		t.Fatalf("item sha %s size %d, want the final file: %s %d", it.SHA256, it.Size, digest(all.Bytes()), all.Len())
	}
	testutil.WaitFor(t, waitTimeout, "file deleted", func() bool { return gone(p) })
	waitScans(t, r, 2)
	if n := len(itemsFor(t, sp, "growing.bin")); n != 1 {
		t.Fatalf("%d items, want 1", n)
	}
}

// A file deleted before it settles is forgotten.
func TestDeletedBeforeSettle(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	opts := testOptions(t, root)
	opts.Settle = 3 * time.Second
	r := startSource(t, opts, sp)

	p := filepath.Join(root, "short-lived.txt")
	writeFile(t, p, []byte("gone soon"))
	testutil.WaitFor(t, waitTimeout, "the file to be seen", func() bool { return r.counters().Settling == 1 })
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "marker.txt"), []byte("marker"))
	waitItem(t, sp, "marker.txt", spool.StateReceived)
	testutil.WaitFor(t, waitTimeout, "nothing left settling", func() bool { return r.counters().Settling == 0 })
	if its := itemsFor(t, sp, "short-lived.txt"); len(its) != 0 {
		t.Fatalf("deleted file became item %s (%s)", its[0].ID, its[0].State)
	}
	if st := r.counters(); st.Seen != 2 || st.Taken != 1 {
		t.Fatalf("stats %+v, want 2 seen, 1 taken", st)
	}
}

// Excluded names (default patterns, excluded folders) and names outside include stay put.
func TestExcludeInclude(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	ignored := []string{".hidden", "x.tmp", "y.part", "~lock.doc", ".git/objects/inside.hl7",
		"sub/.partial/a.hl7", "sub/report.pdf" /* not included */}
	for _, rel := range ignored {
		writeFile(t, filepath.Join(root, rel), []byte("ignore me"))
	}
	opts := testOptions(t, root)
	opts.Include = []string{"*.hl7", "*.HL7"}
	opts.Rescan = 300 * time.Millisecond
	r := startSource(t, opts, sp)
	writeFile(t, filepath.Join(root, "sub/taken.hl7"), []byte("MSH|taken"))
	writeFile(t, filepath.Join(root, "UPPER.HL7"), []byte("MSH|upper"))
	waitItem(t, sp, "sub/taken.hl7", spool.StateReceived)
	waitItem(t, sp, "UPPER.HL7", spool.StateReceived)
	waitScans(t, r, 2)
	for _, rel := range ignored {
		if !exists(filepath.Join(root, rel)) {
			t.Errorf("%s was removed", rel)
		}
		if its := itemsFor(t, sp, rel); len(its) != 0 {
			t.Errorf("%s was taken", rel)
		}
	}
	if st := r.counters(); st.Seen != 2 {
		t.Errorf("stats %+v, want 2 seen", st)
	}
}

// after: move:DIR keeps the relative path, never overwrites, and a move target
// inside the root is not taken again.
func TestAfterMove(t *testing.T) {
	for _, inside := range []bool{false, true} {
		t.Run(fmt.Sprintf("inside=%v", inside), func(t *testing.T) {
			root := t.TempDir()
			done := filepath.Join(t.TempDir(), "done")
			if inside {
				done = filepath.Join(root, "done")
			}
			sp := openSpool(t, spool.Options{})
			writeFile(t, filepath.Join(done, "lab/result.hl7"), []byte("an earlier result"))
			opts := testOptions(t, root)
			opts.After = "move:" + done
			opts.Rescan = 300 * time.Millisecond
			r := startSource(t, opts, sp)

			first := []byte("MSH|first")
			writeFile(t, filepath.Join(root, "lab/result.hl7"), first)
			writeFile(t, filepath.Join(root, "top.txt"), []byte("top"))
			it := waitItem(t, sp, "lab/result.hl7", spool.StateReceived)
			waitItem(t, sp, "top.txt", spool.StateReceived)
			testutil.WaitFor(t, waitTimeout, "files moved", func() bool {
				return gone(filepath.Join(root, "lab/result.hl7")) && gone(filepath.Join(root, "top.txt"))
			})
			if b, _ := os.ReadFile(filepath.Join(done, "top.txt")); string(b) != "top" {
				t.Errorf("done/top.txt holds %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(done, "lab/result.hl7")); string(b) != "an earlier result" {
				t.Errorf("the earlier done/lab/result.hl7 was overwritten: %q", b)
			}
			renamed := filepath.Join(done, "lab", "result."+it.ID+".hl7")
			if b, err := os.ReadFile(renamed); err != nil || !bytes.Equal(b, first) {
				t.Errorf("moved file under its second name: %q, %v", b, err)
			}
			// The stored bytes are a copy: editing the moved file doesn't touch them.
			writeFile(t, renamed, []byte("edited later"))
			if !bytes.Equal(storedBytes(t, sp, it.ID), first) {
				t.Errorf("stored bytes changed with the moved file")
			}
			waitScans(t, r, 2)
			if n := len(allItems(t, sp)); n != 2 {
				t.Errorf("%d items, want 2 (the move target must not be taken)", n)
			}
		})
	}
}

// after: keep takes a file once across rescans and restarts, and again when it changes.
func TestAfterKeep(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	opts := testOptions(t, root)
	opts.After = "keep"
	opts.Rescan = 300 * time.Millisecond
	p := filepath.Join(root, "kept/report.hl7")
	writeFile(t, p, []byte("MSH|v1"))

	r := startSource(t, opts, sp)
	it := waitItem(t, sp, "kept/report.hl7", spool.StateReceived)
	if it.SHA256 != digest([]byte("MSH|v1")) {
		t.Fatalf("wrong digest")
	}
	waitScans(t, r, 3)
	r.stop(t)
	if !exists(p) {
		t.Fatalf("kept file is gone")
	}

	// A new process (new Source, same spool) skips it by fingerprint.
	r = startSource(t, opts, sp)
	waitScans(t, r, 2)
	if n := len(itemsFor(t, sp, "kept/report.hl7")); n != 1 {
		t.Fatalf("%d items after a restart, want 1", n)
	}
	if st := r.counters(); st.Seen != 0 {
		t.Fatalf("stats after restart %+v, want nothing seen", st)
	}

	// Changed: taken again.
	writeFile(t, p, []byte("MSH|v2, longer"))
	testutil.WaitFor(t, waitTimeout, "the changed file taken", func() bool { return len(itemsFor(t, sp, "kept/report.hl7")) == 2 })
	waitScans(t, r, 2)
	r.stop(t)
	r = startSource(t, opts, sp)
	waitScans(t, r, 2)
	its := itemsFor(t, sp, "kept/report.hl7")
	if len(its) != 2 {
		t.Fatalf("%d items, want 2", len(its))
	}
	digests := map[string]bool{its[0].SHA256: true, its[1].SHA256: true}
	if !digests[digest([]byte("MSH|v2, longer"))] {
		t.Fatalf("second item is not the changed content")
	}
}

// Over max_size: a rejected item with the reason, the file moved aside with a reason file.
func TestMaxSizeRejected(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{Sinks: []string{"file"}})
	opts := testOptions(t, root)
	opts.MaxSize = 10
	opts.Rescan = 300 * time.Millisecond
	long := strings.Repeat("ß", 120) + ".bin1234567" // 251 bytes: the reason file name must be shortened
	writeFile(t, filepath.Join(root, "sub/big.bin"), []byte("eleven byte"))
	writeFile(t, filepath.Join(root, "sub", long), []byte("also too big"))
	writeFile(t, filepath.Join(root, "small.bin"), []byte("ten bytes!"))
	r := startSource(t, opts, sp)

	waitItem(t, sp, "small.bin", spool.StateReceived)
	it := waitItem(t, sp, "sub/big.bin", spool.StateRejected)
	want := "size 11 exceeds max_size 10 for source lab-inbox"
	if it.Reason != want || it.Size != 11 {
		t.Fatalf("rejected item reason %q size %d, want %q 11", it.Reason, it.Size, want)
	}
	aside := filepath.Join(root, RejectedDir, "sub/big.bin")
	testutil.WaitFor(t, waitTimeout, "the file moved aside", func() bool { return exists(aside + ".reason.txt") })
	if b, _ := os.ReadFile(aside); string(b) != "eleven byte" {
		t.Fatalf("moved-aside file holds %q", b)
	}
	note, _ := os.ReadFile(aside + ".reason.txt")
	if first, _, _ := strings.Cut(string(note), "\n"); first != want || !strings.Contains(string(note), it.ID) {
		t.Fatalf("reason file:\n%s", note)
	}
	if !gone(filepath.Join(root, "sub/big.bin")) {
		t.Fatalf("rejected file still in place")
	}
	evs, err := sp.Pending(context.Background(), "file", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Files due together are taken concurrently: find the event, in whatever order.
	if !slices.ContainsFunc(evs, func(ev spool.OutboxEvent) bool {
		return ev.ItemID == it.ID && ev.Type == spool.EventRejected
	}) {
		t.Fatalf("outbox %+v, want the rejected event of %s", evs, it.ID)
	}

	it2 := waitItem(t, sp, "sub/"+long, spool.StateRejected)
	testutil.WaitFor(t, waitTimeout, "the long-named file moved aside", func() bool {
		return exists(filepath.Join(root, RejectedDir, "sub", long))
	})
	ents, err := os.ReadDir(filepath.Join(root, RejectedDir, "sub"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".reason.txt") && e.Name() != "big.bin.reason.txt" {
			b, _ := os.ReadFile(filepath.Join(root, RejectedDir, "sub", e.Name()))
			found = strings.Contains(string(b), it2.ID) && len(e.Name()) <= 255
		}
	}
	if !found {
		t.Fatalf("no reason file for the long name among %v", ents)
	}
	if st := r.counters(); st.Rejected != 2 || st.Taken != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The rejected folder itself is never scanned.
	waitScans(t, r, 1)
	if n := len(allItems(t, sp)); n != 3 {
		t.Fatalf("%d items, want 3", n)
	}
}

// A file the agent may not read is rejected. The tests run as root, which reads
// anything, so the open is made to fail as it does for an ordinary user.
func TestUnreadableRejected(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	p := filepath.Join(root, "locked.hl7")
	writeFile(t, p, []byte("MSH|secret"))
	realUser := os.Geteuid() != 0
	if realUser {
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
	}
	startSource(t, testOptions(t, root), sp, func(s *Source) {
		if realUser {
			return
		}
		s.open = func(name string) (*os.File, error) {
			if filepath.Base(name) == "locked.hl7" {
				return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
			}
			return os.Open(name)
		}
	})
	writeFile(t, filepath.Join(root, "fine.hl7"), []byte("MSH|fine"))
	waitItem(t, sp, "fine.hl7", spool.StateReceived)
	it := waitItem(t, sp, "locked.hl7", spool.StateRejected)
	if it.Reason != "file cannot be read: permission denied" {
		t.Fatalf("reason %q", it.Reason)
	}
	testutil.WaitFor(t, waitTimeout, "moved aside", func() bool { return exists(filepath.Join(root, RejectedDir, "locked.hl7.reason.txt")) })
}

// A rejected file that cannot be moved aside is recorded once, not on every scan,
// and moved aside once that becomes possible.
func TestRejectedButStuck(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	// A file where the rejected folder should be: nothing can be moved aside.
	obstacle := filepath.Join(root, RejectedDir)
	writeFile(t, obstacle, []byte("in the way"))
	writeFile(t, filepath.Join(root, "big.bin"), []byte("too large"))
	writeFile(t, filepath.Join(root, "fixed.bin"), []byte("too large"))
	opts := testOptions(t, root)
	opts.MaxSize = 3
	opts.Rescan = 200 * time.Millisecond
	r := startSource(t, opts, sp)
	waitItem(t, sp, "big.bin", spool.StateRejected)
	waitItem(t, sp, "fixed.bin", spool.StateRejected)
	waitScans(t, r, 3)
	if n := len(itemsFor(t, sp, "big.bin")); n != 1 {
		t.Fatalf("%d rejected items, want 1", n)
	}
	if !exists(filepath.Join(root, "big.bin")) {
		t.Fatalf("file vanished")
	}
	// Once changed, it is judged again.
	writeFile(t, filepath.Join(root, "fixed.bin"), []byte("ok"))
	testutil.WaitFor(t, waitTimeout, "the fixed file taken", func() bool { return len(itemsFor(t, sp, "fixed.bin")) == 2 })
	// Once possible, the rejected one is moved aside, without a second rejection.
	if err := os.Remove(obstacle); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, "moved aside", func() bool { return exists(filepath.Join(obstacle, "big.bin.reason.txt")) })
	if n := len(itemsFor(t, sp, "big.bin")); n != 1 || !gone(filepath.Join(root, "big.bin")) {
		t.Fatalf("%d rejected items, want 1", n)
	}
}

// A taken file that cannot be released yet stays, is not taken again, and is
// released at a later rescan once possible.
func TestReleaseRetried(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	done := filepath.Join(t.TempDir(), "done")
	writeFile(t, done, []byte("a file where the move target folder should be"))
	writeFile(t, filepath.Join(root, "sub/a.hl7"), []byte("MSH|a"))
	opts := testOptions(t, root)
	opts.After = "move:" + done
	opts.Rescan = 200 * time.Millisecond
	r := startSource(t, opts, sp)
	waitItem(t, sp, "sub/a.hl7", spool.StateReceived)
	waitScans(t, r, 3)
	if n := len(itemsFor(t, sp, "sub/a.hl7")); n != 1 || !exists(filepath.Join(root, "sub/a.hl7")) {
		t.Fatalf("%d items; want 1 and the file still there", n)
	}
	if err := os.Remove(done); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, "moved", func() bool { return exists(filepath.Join(done, "sub/a.hl7")) })
	if n := len(itemsFor(t, sp, "sub/a.hl7")); n != 1 || !gone(filepath.Join(root, "sub/a.hl7")) {
		t.Fatalf("%d items, want 1", n)
	}
}

// Without a watcher (network share) rescans find files present and added later.
func TestNoWatchRescans(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	writeFile(t, filepath.Join(root, "present.txt"), []byte("present"))
	opts := testOptions(t, root)
	opts.NoWatch = true
	opts.Rescan = 300 * time.Millisecond
	r := startSource(t, opts, sp)
	waitItem(t, sp, "present.txt", spool.StateReceived)
	writeFile(t, filepath.Join(root, "deep/er/later.txt"), []byte("later"))
	waitItem(t, sp, "deep/er/later.txt", spool.StateReceived)
	// The spool commits before the source counts the take: wait for the count.
	testutil.WaitFor(t, waitTimeout, "both files counted as taken", func() bool { return r.counters().Taken == 2 })
	if st := r.counters(); st.Watching || st.Folders != 0 || st.Taken != 2 {
		t.Fatalf("stats %+v, want 2 taken without watching", st)
	}
}

// A watched folder that appears only after start (a share mounted later).
func TestRootAppearsLater(t *testing.T) {
	root := filepath.Join(t.TempDir(), "not-yet")
	sp := openSpool(t, spool.Options{})
	opts := testOptions(t, root)
	opts.Rescan = 200 * time.Millisecond
	startSource(t, opts, sp)
	writeFile(t, filepath.Join(root, "a.txt"), []byte("a"))
	waitItem(t, sp, "a.txt", spool.StateReceived)
}

// Spool full is backpressure: the file waits in the folder and is taken once there is room.
func TestSpoolFullBackpressure(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	sp := openSpool(t, spool.Options{MaxBytes: 150})
	opts := testOptions(t, root)
	opts.Rescan = 200 * time.Millisecond
	writeFile(t, filepath.Join(root, "one.bin"), bytes.Repeat([]byte("1"), 100))
	r := startSource(t, opts, sp)
	first := waitItem(t, sp, "one.bin", spool.StateReceived)

	p := filepath.Join(root, "two.bin")
	writeFile(t, p, bytes.Repeat([]byte("2"), 100))
	testutil.WaitFor(t, waitTimeout, "the second file seen", func() bool { return r.counters().Seen == 2 })
	waitScans(t, r, 3)
	if !exists(p) || len(itemsFor(t, sp, "two.bin")) != 0 {
		t.Fatalf("file taken into a full spool (or lost)")
	}
	if st := r.counters(); st.Settling != 1 || st.Rejected != 0 {
		t.Fatalf("stats %+v, want it waiting", st)
	}

	// Upload and publish the first item: its bytes leave the spool.
	it, err := sp.Lease(ctx, "test", time.Minute)
	if err != nil || it.ID != first.ID {
		t.Fatalf("lease: %v %v", it, err)
	}
	if err := sp.MarkVerified(ctx, it.ID, "test", "http://127.0.0.1/x"); err != nil {
		t.Fatal(err)
	}
	evs, err := sp.Pending(ctx, spool.DefaultSink, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := sp.MarkPublished(ctx, ev.Seq); err != nil {
			t.Fatal(err)
		}
	}
	waitItem(t, sp, "two.bin", spool.StateReceived)
	testutil.WaitFor(t, waitTimeout, "file deleted", func() bool { return gone(p) })
}

// Logs at info level name no file: names carry patient names.
func TestLogsCarryNoFileNames(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	var mu sync.Mutex
	var logs bytes.Buffer
	opts := testOptions(t, root)
	opts.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts.MaxSize = 20
	opts.After = "move:" + filepath.Join(t.TempDir(), "done")
	writeFile(t, filepath.Join(root, "DOE_JOHN_19700101/ok.hl7"), []byte("MSH|ok"))
	writeFile(t, filepath.Join(root, "MUSTERMANN_ERIKA.pdf"), bytes.Repeat([]byte("x"), 50))
	startSource(t, opts, sp)
	waitItem(t, sp, "DOE_JOHN_19700101/ok.hl7", spool.StateReceived)
	waitItem(t, sp, "MUSTERMANN_ERIKA.pdf", spool.StateRejected)
	testutil.WaitFor(t, waitTimeout, "moved aside", func() bool {
		return exists(filepath.Join(root, RejectedDir, "MUSTERMANN_ERIKA.pdf.reason.txt"))
	})
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	for _, name := range []string{"DOE", "MUSTERMANN", "ok.hl7"} {
		if strings.Contains(out, name) {
			t.Errorf("log mentions %q:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "file taken") || !strings.Contains(out, "file rejected") {
		t.Errorf("expected info lines missing:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestFitName(t *testing.T) {
	long := strings.Repeat("é", 127) + "x" // 255 bytes
	got := fitName(long, ".reason.txt")
	if len(got) > 255 || !strings.HasSuffix(got, ".reason.txt") || !strings.HasPrefix(got, "éé") {
		t.Fatalf("fitName: %q (%d bytes)", got, len(got))
	}
	if !utf8.ValidString(got) {
		t.Fatalf("fitName cut a character: %q", got)
	}
	if other := fitName(strings.Repeat("é", 127)+"y", ".reason.txt"); other == got {
		t.Fatalf("two long names shortened to the same name")
	}
	if got := fitName("short", ".reason.txt"); got != "short.reason.txt" {
		t.Fatalf("fitName short: %q", got)
	}
}

// TestKeepSeesSameSizeRewriteWithOldMtime (issue 10, break 6): with after: keep, a
// rewrite to the same size that puts the old mtime back (copy tools that preserve
// timestamps, shares with 2-second mtimes) is a new state and taken again; a change
// of identity or ctime alone (chmod) with the same content is not.
func TestKeepSeesSameSizeRewriteWithOldMtime(t *testing.T) {
	root := t.TempDir()
	sp := openSpool(t, spool.Options{})
	opts := testOptions(t, root)
	opts.After = "keep"
	opts.Rescan = 200 * time.Millisecond
	p := filepath.Join(root, "fixed-name.csv")
	v1, v2 := []byte("result;4.2;mmol/l\n"), []byte("result;5.7;mmol/l\n")
	writeFile(t, p, v1)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	r := startSource(t, opts, sp)
	waitItem(t, sp, "fixed-name.csv", spool.StateReceived)
	waitScans(t, r, 2)

	// Same size, other content, the old mtime put back.
	if err := os.WriteFile(p, v2, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, "the rewritten file taken again", func() bool { return len(itemsFor(t, sp, "fixed-name.csv")) == 2 })
	digests := map[string]bool{}
	for _, it := range itemsFor(t, sp, "fixed-name.csv") {
		digests[it.SHA256] = true
	}
	if !digests[digest(v1)] || !digests[digest(v2)] {
		t.Fatalf("items do not hold both versions")
	}

	// Only the ctime moves (chmod): the content decides, and it is unchanged.
	waitScans(t, r, 1)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	waitScans(t, r, 3)
	if n := len(itemsFor(t, sp, "fixed-name.csv")); n != 2 {
		t.Fatalf("%d items after a chmod, want still 2", n)
	}
}
