package spool

import (
	"context"
	"testing"
)

// publishAll marks a drained batch published the way the publisher should: one
// MarkPublishedBatch (before it: one MarkPublished per event, see BenchmarkPublishEach).
func publishAll(b *testing.B, s *Spool, evs []OutboxEvent) {
	seqs := make([]int64, len(evs))
	for i, ev := range evs {
		seqs[i] = ev.Seq
	}
	if err := s.MarkPublishedBatch(context.Background(), seqs); err != nil {
		b.Fatal(err)
	}
}

func publishEach(b *testing.B, s *Spool, evs []OutboxEvent) {
	for _, ev := range evs {
		if err := s.MarkPublished(context.Background(), ev.Seq); err != nil {
			b.Fatal(err)
		}
	}
}
