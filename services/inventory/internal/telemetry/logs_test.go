package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var record map[string]any
		if err := json.Unmarshal(line, &record); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		out = append(out, record)
	}
	return out
}

func TestLogLinesCarryTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "inventory", slog.LevelInfo)
	span := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	})
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), span), "reserved", "order_id", "o-1")
	log.WarnContext(context.Background(), "no span here")
	log.Debug("dropped below the level")

	records := lines(t, &buf)
	if len(records) != 2 {
		t.Fatalf("got %d lines: %s", len(records), buf.String())
	}
	first := records[0]
	want := map[string]any{
		"level": "INFO", "message": "reserved", "service": "inventory", "order_id": "o-1",
		"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
	}
	for key, value := range want {
		if first[key] != value {
			t.Errorf("%s = %v, want %v", key, first[key], value)
		}
	}
	if _, ok := first["time"]; !ok {
		t.Error("no time")
	}
	if _, ok := first["msg"]; ok {
		t.Error("slog's msg key left in")
	}
	second := records[1]
	if second["level"] != "WARNING" || second["trace_id"] != nil || second["span_id"] != nil {
		t.Errorf("got %v", second)
	}
}
