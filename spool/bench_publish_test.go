package spool

import (
	"context"
	"testing"
)

func publishAll(b *testing.B, s *Spool, evs []OutboxEvent) {
	for _, ev := range evs {
		if err := s.MarkPublished(context.Background(), ev.Seq); err != nil {
			b.Fatal(err)
		}
	}
}
