package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgecourier/courier/spool"
)

// errAmbiguous is a short id that names more than one item.
var errAmbiguous = errors.New("ambiguous item id")

// resolveItem finds the item an id or a unique id prefix names. Unknown is
// spool.ErrNotFound; a prefix shared by several items is errAmbiguous with the count.
func resolveItem(ctx context.Context, sp *spool.Spool, id string) (*spool.Item, error) {
	it, err := sp.Get(ctx, id)
	if err == nil || !errors.Is(err, spool.ErrNotFound) {
		return it, err
	}
	items, err := sp.List(ctx, spool.ListFilter{})
	if err != nil {
		return nil, err
	}
	var found []*spool.Item
	for _, it := range items {
		if strings.HasPrefix(it.ID, id) {
			found = append(found, it)
		}
	}
	switch len(found) {
	case 0:
		return nil, spool.ErrNotFound
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%w: %q matches %d items, give more of it", errAmbiguous, id, len(found))
}

// resolveFailed reports a resolveItem error: exit 2 for an ambiguous prefix, 1 otherwise.
func resolveFailed(stderr io.Writer, what, id, dir string, err error) int {
	switch {
	case errors.Is(err, errAmbiguous):
		return usageErr(stderr, "%s: %v", what, err)
	case errors.Is(err, spool.ErrNotFound):
		return fail(stderr, "%s: no item %s in %s (see courier spool ls)", what, id, dir)
	}
	return fail(stderr, "%s: %v", what, err)
}

// humanSize prints bytes as 512 B, 1.5 KiB, 20.0 MiB.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// humanAge prints a duration coarsely: 42s, 5m, 3h, 2d.
func humanAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// printItem is spool show's text view.
func printItem(w io.Writer, v itemView, now time.Time) {
	line := func(k, val string) {
		if val != "" {
			fmt.Fprintf(w, "%-14s %s\n", k+":", val)
		}
	}
	line("id", v.ID)
	line("state", string(v.State))
	line("source", v.Source+" ("+v.SourceKind+")")
	line("filename", v.Filename)
	line("size", fmt.Sprintf("%s (%d bytes)", humanSize(v.Size), v.Size))
	line("sha256", v.SHA256)
	line("content type", v.ContentType)
	line("priority", v.Priority)
	line("received", fmt.Sprintf("%s (%s ago)", v.ReceivedAt.Local().Format(time.DateTime), humanAge(now.Sub(v.ReceivedAt))))
	line("updated", v.UpdatedAt.Local().Format(time.DateTime))
	line("attempts", fmt.Sprintf("%d (tries %d)", v.Attempts, v.Tries))
	if v.NextAttempt != nil {
		line("next attempt", fmt.Sprintf("%s (in %s)", v.NextAttempt.Local().Format(time.DateTime), humanAge(v.NextAttempt.Sub(now))))
	}
	upload := "not started"
	if v.UploadURL != "" {
		upload = "started (resumable upload URL known)"
	}
	line("upload", upload)
	line("location", v.Location)
	if v.VerifiedAt != nil {
		line("verified", v.VerifiedAt.Local().Format(time.DateTime))
	}
	line("last error", v.LastError)
	line("reason", v.Reason)
	line("duplicate of", v.DuplicateOf)
	line("corrects", v.Corrects)
}

// exportItem copies the item's stored bytes to dir/<id> (0600, never over an
// existing file), checking them against the recorded SHA-256 while copying.
func exportItem(sp *spool.Spool, it *spool.Item, dir string) (string, error) {
	src, err := sp.OpenContent(it.ID)
	if errors.Is(err, spool.ErrContentMissing) {
		return "", fmt.Errorf("item %s: its content is gone from the spool: run courier spool verify", it.ID)
	}
	if err != nil {
		return "", fmt.Errorf("item %s: %w", it.ID, err)
	}
	defer src.Close()
	dst := filepath.Join(dir, it.ID)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("%s already exists: move it away or choose another directory", dst)
	}
	if err != nil {
		return "", fmt.Errorf("item %s: %w: choose a directory you can write to", it.ID, err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), src)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("item %s: writing %s: %w", it.ID, dst, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); it.SHA256 != "" && got != it.SHA256 {
		os.Remove(dst)
		return "", fmt.Errorf("item %s: stored bytes have sha256 %s, recorded %s: nothing exported; run courier spool verify", it.ID, got, it.SHA256)
	}
	return dst, nil
}
