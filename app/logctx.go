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
// context carries (withDelivery) that the record does not have itself
// (an installation's lines name theirs). (Under a WithGroup they would go
// in the group: lastmile's loggers have none.)
type contextAttrs struct{ slog.Handler }

func (h contextAttrs) Handle(ctx context.Context, r slog.Record) error {
	if attrs, ok := ctx.Value(deliveryAttrsKey{}).([]slog.Attr); ok {
		own := map[string]bool{}
		r.Attrs(func(a slog.Attr) bool { own[a.Key] = true; return true })
		r = r.Clone()
		for _, a := range attrs {
			if !own[a.Key] {
				r.AddAttrs(a)
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextAttrs{h.Handler.WithAttrs(attrs)}
}

func (h contextAttrs) WithGroup(name string) slog.Handler {
	return contextAttrs{h.Handler.WithGroup(name)}
}
