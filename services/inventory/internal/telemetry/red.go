package telemetry

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/services/inventory/internal/statuscode"
)

// The RED instruments and their attributes, the same in all three languages.
const (
	DurationMetric = "rpc.server.call.duration"  // Prometheus: rpc_server_call_duration_seconds
	RetriesMetric  = "rpc.server.retry_attempts" // Prometheus: rpc_server_retry_attempts_total

	ServiceKey = attribute.Key("rpc.service")          // shop.inventory.v1.InventoryService
	MethodKey  = attribute.Key("rpc.method")           // ReserveStock
	CodeKey    = attribute.Key("rpc.grpc.status_code") // the status code's name: "OK", "UNAVAILABLE"
	CallerKey  = attribute.Key("mesh.caller")          // the caller's mesh identity: "orders", "unknown"
)

// DurationBuckets are the histogram's bucket boundaries in seconds, suited
// to RPC latency from half a millisecond to ten seconds.
var DurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// PreviousAttemptsHeader is what gRPC's client retry adds to every attempt
// after the first (gRPC proposal A6). grpc-go passes it to the server's
// metadata: its transport reserves it but lets it through.
const PreviousAttemptsHeader = "grpc-previous-rpc-attempts"

// ServerMetrics is a server stats handler recording on provider, for every
// call the server handles (health and reflection included: real traffic):
//
//   - rpc.server.call.duration (s): from the call's arrival to its status
//     sent, faults' delays included, by rpc.service, rpc.method,
//     rpc.grpc.status_code and mesh.caller; shed, denied, faulted and
//     cancelled calls are counted with their code.
//   - rpc.server.retry_attempts: calls that are a client's retry, by
//     rpc.service, rpc.method and mesh.caller.
//
// caller names the call's caller from its context ("unknown" without a
// verified identity). A call to a method the server does not have ends
// before gRPC reports its end to stats handlers, so it is not counted and
// cannot grow the label sets.
func ServerMetrics(provider metric.MeterProvider, caller func(context.Context) string) (stats.Handler, error) {
	meter := provider.Meter("github.com/shopmesh/shopmesh/services/inventory/internal/telemetry")
	duration, err := meter.Float64Histogram(DurationMetric,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of the RPCs the server handled, from arrival to status."),
		metric.WithExplicitBucketBoundaries(DurationBuckets...))
	if err != nil {
		return nil, err
	}
	retries, err := meter.Int64Counter(RetriesMetric,
		metric.WithUnit("{attempt}"),
		metric.WithDescription("RPCs the server handled that were a client's retry of an earlier attempt."))
	if err != nil {
		return nil, err
	}
	return &redHandler{duration: duration, retries: retries, caller: caller}, nil
}

type redHandler struct {
	duration metric.Float64Histogram
	retries  metric.Int64Counter
	caller   func(context.Context) string
}

type (
	callKey   struct{}
	callerKey struct{}
)

// call is what TagRPC learns of a call, for its end.
type call struct {
	attrs []attribute.KeyValue // service, method, caller
	retry bool
}

// TagRPC runs at the call's arrival, with its peer and metadata in ctx.
func (h *redHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	full := strings.TrimPrefix(info.FullMethodName, "/")
	cut := strings.LastIndex(full, "/")
	caller, ok := ctx.Value(callerKey{}).(attribute.KeyValue)
	if !ok {
		caller = CallerKey.String(h.caller(ctx))
	}
	c := &call{
		attrs: []attribute.KeyValue{
			ServiceKey.String(full[:max(cut, 0)]),
			MethodKey.String(full[cut+1:]),
			caller,
		},
		retry: len(metadata.ValueFromIncomingContext(ctx, PreviousAttemptsHeader)) > 0,
	}
	return context.WithValue(ctx, callKey{}, c)
}

func (h *redHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok {
		return
	}
	c, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		return
	}
	if c.retry {
		h.retries.Add(ctx, 1, metric.WithAttributes(c.attrs...))
	}
	attrs := append(c.attrs[:len(c.attrs):len(c.attrs)], CodeKey.String(statuscode.Name(status.Code(end.Error))))
	h.duration.Record(ctx, end.EndTime.Sub(end.BeginTime).Seconds(), metric.WithAttributes(attrs...))
}

// TagConn names the caller once per connection: its peer, and so its
// certificate, is the same for every call on it (the context of each call
// derives from this one).
func (h *redHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, callerKey{}, CallerKey.String(h.caller(ctx)))
}

func (h *redHandler) HandleConn(context.Context, stats.ConnStats) {}
