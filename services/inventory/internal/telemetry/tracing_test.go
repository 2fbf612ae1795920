package telemetry

import (
	"context"
	"slices"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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

// countExporters makes newExporter count the exporters it makes, until the
// test ends.
func countExporters(t *testing.T) *int {
	made := new(int)
	saved := newExporter
	newExporter = func(ctx context.Context) (sdktrace.SpanExporter, error) {
		*made++
		return saved(ctx)
	}
	t.Cleanup(func() { newExporter = saved })
	return made
}

func TestStartTracing(t *testing.T) {
	// Nothing listens there; with no span to export, shutdown is immediate.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	made := countExporters(t)
	tracing, err := StartTracing(t.Context(), "inventory", "0.1.0", "otlp")
	if err != nil {
		t.Fatal(err)
	}
	if !tracing.Enabled() || tracing.Provider() == nil {
		t.Fatal("tracing is not enabled")
	}
	if *made != 1 {
		t.Errorf("%d exporters made, want 1", *made)
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

func TestStartTracingWithoutExporter(t *testing.T) {
	// The developer's shell may name a sampler that drops spans.
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
	made := countExporters(t)
	tracing, err := StartTracing(t.Context(), "inventory", "0.1.0", "none")
	if err != nil {
		t.Fatal(err)
	}
	if !tracing.Enabled() || tracing.Provider() == nil {
		t.Fatal("tracing is not enabled")
	}
	ctx, span := tracing.Provider().Tracer("test").Start(t.Context(), "kept")
	// Recorded and sampled as with an exporter, so the next hop is told to
	// sample too.
	if !span.IsRecording() || !span.SpanContext().IsSampled() {
		t.Errorf("span recording %v, sampled %v", span.IsRecording(), span.SpanContext().IsSampled())
	}
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	sc := span.SpanContext()
	if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; carrier["traceparent"] != want {
		t.Errorf("traceparent %q, want %q", carrier["traceparent"], want)
	}
	span.End()
	if err := tracing.Shutdown(); err != nil {
		t.Error(err)
	}
	if *made != 0 {
		t.Errorf("%d exporters made, want none", *made)
	}
}

func TestStartTracingRefusesAnUnknownExporter(t *testing.T) {
	made := countExporters(t)
	if tracing, err := StartTracing(t.Context(), "inventory", "0.1.0", "zipkin"); err == nil || tracing != nil {
		t.Errorf("got %v, %v; want an error", tracing, err)
	}
	if *made != 0 {
		t.Errorf("%d exporters made, want none", *made)
	}
}
