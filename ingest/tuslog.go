package ingest

import (
	"context"
	"log/slog"

	expslog "golang.org/x/exp/slog"
)

// tusdLogger bridges tusd's logger (golang.org/x/exp/slog) to the log/slog
// logger handed to us. tusd logs every request at info; those become debug
// here so an ingest log stays readable, warnings and errors keep their level.
func tusdLogger(l *slog.Logger) *expslog.Logger {
	return expslog.New(&expBridge{h: l.Handler()})
}

type expBridge struct {
	h slog.Handler
}

func bridgeLevel(l expslog.Level) slog.Level {
	if l < expslog.LevelWarn {
		return slog.LevelDebug
	}
	return slog.Level(l)
}

func (b *expBridge) Enabled(ctx context.Context, l expslog.Level) bool {
	return b.h.Enabled(ctx, bridgeLevel(l))
}

func (b *expBridge) Handle(ctx context.Context, r expslog.Record) error {
	out := slog.NewRecord(r.Time, bridgeLevel(r.Level), "tusd: "+r.Message, r.PC)
	r.Attrs(func(a expslog.Attr) bool {
		out.AddAttrs(bridgeAttr(a))
		return true
	})
	return b.h.Handle(ctx, out)
}

func bridgeAttr(a expslog.Attr) slog.Attr {
	return slog.Any(a.Key, a.Value.Any())
}

func (b *expBridge) WithAttrs(attrs []expslog.Attr) expslog.Handler {
	out := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, bridgeAttr(a))
	}
	return &expBridge{h: b.h.WithAttrs(out)}
}

func (b *expBridge) WithGroup(name string) expslog.Handler {
	return &expBridge{h: b.h.WithGroup(name)}
}
