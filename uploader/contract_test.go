package uploader

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/edgecourier/courier/spool"
)

// An item whose spooled bytes are gone cannot be uploaded by waiting: it is
// quarantined with the reason, and the quarantined event is in the outbox.
func TestMissingContentQuarantines(t *testing.T) {
	e := newEnv(t)
	gone := e.add(payload(5000, 21), "gone")
	kept := e.add(payload(5000, 22), "kept")
	if err := os.Remove(e.spool.ContentPath(gone.ID)); err != nil {
		t.Fatal(err)
	}
	e.run(e.uploader(e.options()))
	got := e.wait(gone.ID, spool.StateQuarantined, spool.StateVerified)
	if got.State != spool.StateQuarantined || !strings.Contains(got.Reason, "missing") {
		t.Fatalf("state %s reason %q attempts %d: want quarantined, content missing", got.State, got.Reason, got.Attempts)
	}
	e.checkStored(e.wait(kept.ID, spool.StateVerified, spool.StateQuarantined), payload(5000, 22))
	evs, err := e.spool.Pending(context.Background(), spool.DefaultSink, 0)
	if err != nil {
		t.Fatal(err)
	}
	quarantined := 0
	for _, ev := range evs {
		if ev.ItemID == gone.ID && ev.Type == spool.EventQuarantined {
			quarantined++
		}
	}
	if quarantined != 1 {
		t.Errorf("%d quarantined events for the item without content, want 1 (events: %+v)", quarantined, evs)
	}
}
