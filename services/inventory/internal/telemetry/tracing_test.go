package telemetry

import (
	"slices"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
)

func TestResourceDefaultsGiveWayToEnvironment(t *testing.T) {
	res := newResource(t.Context(), "inventory", "0.1.0")
	if v, _ := res.Set().Value("service.name"); v.AsString() != "inventory" {
		t.Errorf("service.name = %q", v.AsString())
	}
	t.Setenv("OTEL_SERVICE_NAME", "inventory-blue")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,service.version=9")
	set := newResource(t.Context(), "inventory", "0.1.0").Set()
	want := map[attribute.Key]string{
		"service.name": "inventory-blue", "service.version": "9", "deployment.environment.name": "test",
	}
	for key, value := range want {
		if got, _ := set.Value(key); got.AsString() != value {
			t.Errorf("%s = %q, want %q", key, got.AsString(), value)
		}
	}
}

func TestStartTracing(t *testing.T) {
	// Nothing listens there; with no span to export, shutdown is immediate.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	tracing, err := StartTracing(t.Context(), "inventory", "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if !tracing.Enabled() || tracing.Provider() == nil {
		t.Fatal("tracing is not enabled")
	}
	fields := otel.GetTextMapPropagator().Fields()
	if !slices.Contains(fields, "traceparent") || !slices.Contains(fields, "baggage") {
		t.Errorf("propagator fields %v", fields)
	}
	if err := tracing.Shutdown(); err != nil {
		t.Error(err)
	}
	var off Tracing
	if off.Enabled() || off.Provider() != nil || off.Shutdown() != nil {
		t.Error("the zero Tracing is not off")
	}
}
