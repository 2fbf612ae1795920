package server

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/authz"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/telemetry"
	"github.com/shopmesh/shopmesh/services/inventory/internal/telemetry/promtest"
)

const (
	durationCount = "rpc_server_call_duration_seconds_count"
	durationSum   = "rpc_server_call_duration_seconds_sum"
	retriesTotal  = "rpc_server_retry_attempts_total"
)

// withMetrics starts the metrics endpoint on a free loopback port and puts
// its handler in opts, as main does with mTLS off (callers unknown).
func withMetrics(t *testing.T, opts Options) (Options, string) {
	t.Helper()
	metrics, err := telemetry.StartMetrics(t.Context(), "127.0.0.1:0", "inventory", "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := metrics.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	opts.Metrics, err = telemetry.ServerMetrics(metrics.Provider(),
		func(ctx context.Context) string { return authz.Caller(ctx, nil) })
	if err != nil {
		t.Fatal(err)
	}
	return opts, metrics.Addr()
}

// counted polls /metrics until it has counted total calls (the server
// records a call just after its status is sent) and returns that page.
func counted(t *testing.T, addr string, total float64) promtest.Samples {
	t.Helper()
	var samples promtest.Samples
	eventually(t, fmt.Sprintf("%v calls counted", total), func() bool {
		samples = promtest.Scrape(t, addr)
		return samples.Sum(durationCount, nil) >= total
	})
	return samples
}

func series(service, method, code string) map[string]string {
	return map[string]string{"rpc_service": service, "rpc_method": method,
		"rpc_grpc_status_code": code, "mesh_caller": "unknown"}
}

func TestMetricsCountCallsByMethodAndCode(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	path := filepath.Join(t.TempDir(), "faults.yaml")
	writeFaults(t, path, "faults:\n  inventory:\n    ReleaseStock: {delay_ms: 60000}\n")
	opts, addr := withMetrics(t, Options{Faults: Faults{File: path}})
	// Tracing on as well, with a global meter provider that otelgrpc would
	// use if it were let: each call must still be counted once.
	previous := otel.GetMeterProvider()
	t.Cleanup(func() { otel.SetMeterProvider(previous) })
	metrics, err := telemetry.StartMetrics(t.Context(), "127.0.0.1:0", "inventory", "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = metrics.Shutdown() })
	otel.SetMeterProvider(metrics.Provider())
	opts.StatsHandler = telemetry.ServerHandler(sdktrace.NewTracerProvider())
	f := start(t, opts)

	for range 3 {
		if _, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		_, err := f.client.CommitStock(ctx(t), &pb.CommitStockRequest{OrderId: "o-none"})
		wantCode(t, err, codes.NotFound)
	}
	if _, err := f.health.Check(ctx(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// Cancelled by the client during the injected delay.
	cancelled, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = f.client.ReleaseStock(cancelled, &pb.ReleaseStockRequest{OrderId: "o-none"})
	wantCode(t, err, codes.Canceled)

	samples := counted(t, addr, 7)
	const inventory = "shop.inventory.v1.InventoryService"
	want := []struct {
		series map[string]string
		count  float64
	}{
		{series(inventory, "GetStock", "OK"), 3},
		{series(inventory, "CommitStock", "NOT_FOUND"), 2},
		{series("grpc.health.v1.Health", "Check", "OK"), 1},
		{series(inventory, "ReleaseStock", "CANCELLED"), 1},
		{map[string]string{}, 7},
	}
	for _, w := range want {
		if got := samples.Sum(durationCount, w.series); got != w.count {
			t.Errorf("%s%v = %v, want %v", durationCount, w.series, got, w.count)
		}
	}
	if took := samples.Sum(durationSum, series(inventory, "ReleaseStock", "CANCELLED")); took < 0.05 {
		t.Errorf("the cancelled call lasted %vs, want its delay until the cancel counted", took)
	}
	var buckets []string
	for _, labels := range samples.Series("rpc_server_call_duration_seconds_bucket") {
		if labels["rpc_method"] == "GetStock" {
			buckets = append(buckets, labels["le"])
		}
	}
	wantBuckets := []string{"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
		"2.5", "5", "10", "+Inf"}
	if !slices.Equal(buckets, wantBuckets) {
		t.Errorf("buckets %v, want %v", buckets, wantBuckets)
	}
	if got := samples.Sum(retriesTotal, nil); got != 0 {
		t.Errorf("%v retries counted, none made", got)
	}
	if got := samples.Sum("target_info", map[string]string{"service_name": "inventory"}); got != 1 {
		t.Errorf("target_info service_name=inventory: %v", got)
	}
	// The global provider got nothing from otelgrpc.
	if got := promtest.Scrape(t, metrics.Addr()).Sum(durationCount, nil); got != 0 {
		t.Errorf("otelgrpc counted %v calls on the global meter provider", got)
	}
}

// retryPolicy retries GetStock on UNAVAILABLE: three attempts in all.
const retryPolicy = `{"methodConfig": [{
  "name": [{"service": "shop.inventory.v1.InventoryService"}],
  "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
                  "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`

func TestMetricsCountRetryAttempts(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	opts, addr := withMetrics(t, Options{Faults: Faults{ErrorPercent: 100}})
	f := start(t, opts)
	retrying, err := grpc.NewClient(f.srv.listener.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultServiceConfig(retryPolicy))
	if err != nil {
		t.Fatal(err)
	}
	defer retrying.Close()
	request := &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}}
	_, err = pb.NewInventoryServiceClient(retrying).GetStock(ctx(t), request)
	wantCode(t, err, codes.Unavailable)
	// The control: the same call without the retry policy is one attempt.
	_, err = f.client.GetStock(ctx(t), request)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("without retries: %v", err)
	}

	samples := counted(t, addr, 4)
	method := map[string]string{"rpc_method": "GetStock", "mesh_caller": "unknown"}
	if got := samples.Sum(durationCount, series("shop.inventory.v1.InventoryService", "GetStock", "UNAVAILABLE")); got != 4 {
		t.Errorf("attempts counted: %v, want 3 + 1", got)
	}
	if got := samples.Sum(retriesTotal, method); got != 2 {
		t.Errorf("%s = %v, want 2 (the second and third attempts)", retriesTotal, got)
	}
}
