package server

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/telemetry"
)

func TestServerSpansCarryStatusCodes(t *testing.T) {
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	f := start(t, Options{StatsHandler: telemetry.ServerHandler(provider)})

	// Never traced: health and reflection.
	if _, err := f.health.Check(ctx(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	listServices(t, f.conn)
	if _, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}}); err != nil {
		t.Fatal(err)
	}
	_, _ = f.client.CommitStock(ctx(t), &pb.CommitStockRequest{OrderId: "o-none"})

	// The server ends a span just after the client has its answer.
	deadline := time.Now().Add(callTimeout)
	for len(recorder.Ended()) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	spans := recorder.Ended()
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want GetStock and CommitStock only", len(spans))
	}
	want := map[string]struct {
		code int64
		name string
	}{
		"shop.inventory.v1.InventoryService/GetStock":    {0, "OK"},
		"shop.inventory.v1.InventoryService/CommitStock": {5, "NOT_FOUND"},
	}
	for _, span := range spans {
		w, ok := want[span.Name()]
		if !ok {
			t.Errorf("unexpected span %q", span.Name())
			continue
		}
		attrs := attribute.NewSet(span.Attributes()...)
		code, _ := attrs.Value(telemetry.StatusCodeKey)
		if code.Type() != attribute.INT64 || code.AsInt64() != w.code {
			t.Errorf("%s: %s = %v, want int %d", span.Name(), telemetry.StatusCodeKey, code.Emit(), w.code)
		}
		if named, _ := attrs.Value("rpc.response.status_code"); named.AsString() != w.name {
			t.Errorf("%s: rpc.response.status_code = %q, want %q", span.Name(), named.AsString(), w.name)
		}
	}
}
