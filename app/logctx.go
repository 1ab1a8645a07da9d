package app

import (
	"context"
	"log/slog"

	"github.com/lastmile-app/lastmile/pipeline"
)

// The lines the pipeline logs while it handles a delivery carry the
// delivery's ID, event, action and installation, as the worker's own do:
// the worker puts them in the handling's context (withDelivery), and the
// service's log handler (contextAttrs) adds them to every record logged
// with that context. The pipeline names the repository itself.

type deliveryAttrsKey struct{}

// withDelivery is ctx carrying d's attributes for the log.
func withDelivery(ctx context.Context, d *pipeline.Delivery) context.Context {
	attrs := []slog.Attr{slog.String("delivery", d.ID), slog.String("event", d.Event)}
	if d.Action != "" {
		attrs = append(attrs, slog.String("action", d.Action))
	}
	return context.WithValue(ctx, deliveryAttrsKey{}, append(attrs, slog.Int64("installation", d.InstallationID)))
}

// contextAttrs is a slog.Handler adding to each record the attributes its
// context carries (withDelivery).
type contextAttrs struct{ slog.Handler }

func (h contextAttrs) Handle(ctx context.Context, r slog.Record) error {
	if attrs, ok := ctx.Value(deliveryAttrsKey{}).([]slog.Attr); ok {
		r = r.Clone()
		r.AddAttrs(attrs...)
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextAttrs{h.Handler.WithAttrs(attrs)}
}

func (h contextAttrs) WithGroup(name string) slog.Handler {
	return contextAttrs{h.Handler.WithGroup(name)}
}
