package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// shutdownTimeout bounds the final flush: with no collector listening the
// exporter would otherwise retry for as long as its own timeout allows.
const shutdownTimeout = 3 * time.Second

// Tracing is what StartTracing set up; the zero value is tracing turned off.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// newExporter is otlptracegrpc.New; tests count the exporters it makes.
var newExporter = func(ctx context.Context) (sdktrace.SpanExporter, error) {
	return otlptracegrpc.New(ctx)
}

// StartTracing installs a global tracer provider, and W3C trace context plus
// baggage as propagators. exporter is config's TracesExporter: "otlp"
// batches spans to the OTLP gRPC exporter; "none" makes no exporter and no
// span processor, so spans are still made, sampled and propagated, and the
// cost of making them can be told apart from that of exporting them.
//
// The exporter gets no options, so OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT,
// _INSECURE, _HEADERS and _TIMEOUT, OTEL_BSP_* and OTEL_TRACES_SAMPLER are
// read by the SDK itself. The resource says service.name=name and
// service.version=version unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise: the environment wins.
func StartTracing(ctx context.Context, name, version, exporter string) (*Tracing, error) {
	options := []sdktrace.TracerProviderOption{sdktrace.WithResource(newResource(ctx, name, version))}
	switch exporter {
	case "otlp":
		otlp, err := newExporter(ctx)
		if err != nil {
			return nil, err
		}
		options = append(options, sdktrace.WithBatcher(otlp))
	case "none":
	default:
		// config rejects any other value; a caller that skips it must not
		// get a silent "none" or "otlp" instead.
		return nil, fmt.Errorf("traces exporter %q is neither otlp nor none", exporter)
	}
	provider := sdktrace.NewTracerProvider(options...)
	otel.SetTracerProvider(provider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{}))
	// Export failures (no collector) become JSON log lines, not stray text.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		slog.Warn("opentelemetry error", "error", err.Error())
	}))
	return &Tracing{provider: provider}, nil
}

// newResource describes the process: defaults first, then what
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES say, which wins.
func newResource(ctx context.Context, name, version string) *resource.Resource {
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", name),
			attribute.String("service.version", version),
		),
		resource.WithFromEnv(), // last, so it overrides the defaults above
	)
	if err != nil {
		// A malformed OTEL_RESOURCE_ATTRIBUTES still leaves a usable
		// resource; the SDK's own rule is to warn, not to refuse to start.
		slog.Warn("resource attributes partly ignored", "error", err.Error())
	}
	return res
}

// Enabled reports whether spans are recorded at all.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

// Provider is the tracer provider, or nil when tracing is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if !t.Enabled() {
		return nil
	}
	return t.provider
}

// Shutdown flushes the spans still queued and stops the exporter, giving up
// after a few seconds.
func (t *Tracing) Shutdown() error {
	if !t.Enabled() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := t.provider.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("spans not exported within " + shutdownTimeout.String())
	}
	return err
}

// StatusCodeKey is the span attribute with the numeric gRPC status code.
// otelgrpc v0.72 records only the newer string form, rpc.response.status_code
// ("NOT_FOUND"); the Python services' instrumentation and the trace tests use
// this one, so every server span carries both.
const StatusCodeKey = attribute.Key("rpc.grpc.status_code")

// ServerHandler is otelgrpc's server stats handler on provider, leaving out
// the health and reflection services (probes and grpcurl would bury the
// business spans), and adding StatusCodeKey to each server span. Its own
// rpc metrics go to a no-op meter provider: ServerMetrics counts each call.
func ServerHandler(provider trace.TracerProvider) stats.Handler {
	return statusCodeHandler{otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(provider),
		otelgrpc.WithMeterProvider(noop.NewMeterProvider()),
		otelgrpc.WithPropagators(otel.GetTextMapPropagator()),
		otelgrpc.WithFilter(filters.None(
			filters.HealthCheck(),
			filters.ServicePrefix("grpc.reflection."),
		)),
	)}
}

type statusCodeHandler struct {
	stats.Handler
}

func (h statusCodeHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	// Before the wrapped handler sees End: it ends the span.
	if end, ok := rs.(*stats.End); ok {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(StatusCodeKey.Int(int(status.Code(end.Error))))
		}
	}
	h.Handler.HandleRPC(ctx, rs)
}
