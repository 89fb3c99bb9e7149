package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// partsSpool: items starting with "MSG" carry two parts, their 2nd and 3rd
// lines; the splitter fails while *fail is set.
func partsSpool(t *testing.T, dir string, fail *bool) *Spool {
	return openTest(t, Options{Dir: dir,
		Inspect: func(path string) *Envelope {
			b, _ := os.ReadFile(path)
			if !bytes.HasPrefix(b, []byte("MSG")) {
				return nil
			}
			return &Envelope{DedupeKey: "k|" + string(bytes.SplitN(b, []byte("\n"), 2)[0]), Parts: 2}
		},
		Split: func(path string, it *Item) ([]Part, error) {
			if *fail {
				return nil, errors.New("simulated failure")
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			lines := bytes.Split(b, []byte("\n"))
			var ps []Part
			for k := 1; k <= 2; k++ {
				data := lines[k]
				ps = append(ps, Part{Index: k, ContentType: "text/plain", Data: []byte(`{"part":true}`),
					Meta: map[string]string{"attachment_of": it.ID},
					Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }})
			}
			return ps, nil
		}})
}

// A failed part keeps the source unreleased (error) and the message out of
// upload; the source's retry, a duplicate, finishes the original's parts once.
func TestPartsDuplicateRetryFinishes(t *testing.T) {
	ctx := context.Background()
	fail := true
	s := partsSpool(t, t.TempDir(), &fail)
	msg := []byte("MSG 1\npart one\npart two")
	if _, err := s.Receive(ctx, Intake{Source: "lab"}, bytes.NewReader(msg)); err == nil {
		t.Fatal("Receive returned nil although the parts failed")
	}
	if _, err := s.Lease(ctx, "t", time.Minute); !errors.Is(err, ErrEmpty) {
		t.Fatalf("message with pending parts leasable: %v", err)
	}
	fail = false
	dup, err := s.Receive(ctx, Intake{Source: "lab"}, bytes.NewReader(msg))
	if err != nil || dup.State != StateDuplicate {
		t.Fatalf("retry: %v, %v", dup, err)
	}
	ids, err := s.Parts(ctx, dup.DuplicateOf)
	if err != nil || len(ids) != 2 {
		t.Fatalf("parts %v, %v", ids, err)
	}
	for i, want := range []string{"part one", "part two"} {
		p, err := s.Get(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(s.ContentPath(p.ID))
		if string(b) != want || p.Meta["attachment_of"] != dup.DuplicateOf || string(p.Envelope) != `{"part":true}` {
			t.Errorf("part %d: %q meta %v envelope %s", i, b, p.Meta, p.Envelope)
		}
	}
	m, _ := s.Get(ctx, dup.DuplicateOf)
	if got := SplitAttachments(m.Meta); len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Errorf("message meta attachments %v, want %v", got, ids)
	}
	// A second retry changes nothing; all three items are leasable now.
	if _, err := s.Receive(ctx, Intake{Source: "lab"}, bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	if ids2, _ := s.Parts(ctx, dup.DuplicateOf); len(ids2) != 2 {
		t.Errorf("parts after a second retry: %v", ids2)
	}
	for range 3 {
		if _, err := s.Lease(ctx, "t", time.Minute); err != nil {
			t.Fatalf("lease: %v", err)
		}
	}
}

// A lost database: Recover rebuilds message and parts from their descriptions
// and the links between them.
func TestPartsRelinkedByRecover(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fail := false
	s := partsSpool(t, dir, &fail)
	msg, err := s.Receive(ctx, Intake{Source: "lab"}, bytes.NewReader([]byte("MSG 2\nalpha\nbeta")))
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := s.Parts(ctx, msg.ID)
	if len(ids) != 2 {
		t.Fatalf("parts %v", ids)
	}
	s.Close()
	for _, suf := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(dir, "spool.db"+suf))
	}
	rep, err := Recover(ctx, Options{Dir: dir})
	if err != nil || rep.Recovered != 3 {
		t.Fatalf("recover: %+v, %v", rep, err)
	}
	s2 := openTest(t, Options{Dir: dir})
	got, err := s2.Parts(ctx, msg.ID)
	if err != nil || len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Fatalf("parts after recover %v, %v; want %v", got, err, ids)
	}
	m, _ := s2.Get(ctx, msg.ID)
	if l := SplitAttachments(m.Meta); len(l) != 2 || l[0] != ids[0] || l[1] != ids[1] {
		t.Errorf("message meta attachments after recover %v, want %v", l, ids)
	}
}
