// Package telemetry sets up what the inventory tells the outside world about
// itself: JSON logs carrying trace ids, and OpenTelemetry tracing exported
// over OTLP, configured by the standard OTEL_* variables.
package telemetry

import (
	"context"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// NewLogger writes one JSON object per line to w, shaped like the Python
// services' lines (tracing/logs.py) so one log query works for every service:
//
//	{"time":"2025-01-01T12:00:00.123456Z","level":"INFO","message":"serving on port 50053",
//	 "service":"inventory","trace_id":"4bf92f...","span_id":"00f067..."}
//
// trace_id and span_id are present when the context passed to the *Context
// logging functions carries a valid span.
func NewLogger(w io.Writer, service string, level slog.Leveler) *slog.Logger {
	json := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: pythonNames})
	return slog.New(traceHandler{json}).With("service", service)
}

// pythonNames renames slog's built-in keys and values to those of the
// Python services: "message" and "WARNING", time in UTC.
func pythonNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "message"
	case slog.TimeKey:
		a.Value = slog.TimeValue(a.Value.Time().UTC())
	case slog.LevelKey:
		if level, ok := a.Value.Any().(slog.Level); ok && level == slog.LevelWarn {
			a.Value = slog.StringValue("WARNING")
		}
	}
	return a
}

// traceHandler adds the ids of the context's span to each record.
type traceHandler struct {
	slog.Handler
}

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if span := trace.SpanContextFromContext(ctx); span.IsValid() {
		// A Record shares its attribute storage with copies; Clone first.
		r = r.Clone()
		r.AddAttrs(
			slog.String("trace_id", span.TraceID().String()),
			slog.String("span_id", span.SpanID().String()),
		)
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
