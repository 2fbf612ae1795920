package main

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/telemetry/promtest"
)

func TestMetricsNameTheCallerByItsCertificate(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	s := &secured{dir: t.TempDir()}
	s.ca = meshtlstest.WriteDir(t, s.dir, "inventory")
	cfg := config.Config{MTLS: true, CertsDir: s.dir, Service: "inventory", PolicyFile: shopPolicy,
		MetricsAddr: "127.0.0.1:0"}
	served := serveEndpoints(t, cfg, tracetest.NewSpanRecorder())
	s.addr = served.addr
	orders := s.dial(t, s.ca.Issue(t, "orders"))
	gateway := s.dial(t, s.ca.Issue(t, "gateway"))

	for range 2 {
		if _, err := reserve(t, orders); err != nil {
			t.Fatal(err)
		}
	}
	_, err := pb.NewInventoryServiceClient(orders).GetStock(callCtx(t),
		&pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("orders reading stock: %v", err)
	}
	if err := health(t, gateway); err != nil {
		t.Fatal(err)
	}

	// The server records a call just after sending its status: poll.
	var samples promtest.Samples
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		samples = promtest.Scrape(t, served.metrics)
		if samples.Sum("rpc_server_call_duration_seconds_count", nil) >= 4 || time.Now().After(deadline) {
			break
		}
	}
	const inventory = "shop.inventory.v1.InventoryService"
	for _, w := range []struct {
		service, method, code, caller string
		count                         float64
	}{
		{inventory, "ReserveStock", "OK", "orders", 2},
		{inventory, "GetStock", "PERMISSION_DENIED", "orders", 1},
		{"grpc.health.v1.Health", "Check", "OK", "gateway", 1},
		{"", "", "", "unknown", 0},
	} {
		match := map[string]string{"mesh_caller": w.caller}
		for key, value := range map[string]string{"rpc_service": w.service, "rpc_method": w.method,
			"rpc_grpc_status_code": w.code} {
			if value != "" {
				match[key] = value
			}
		}
		if got := samples.Sum("rpc_server_call_duration_seconds_count", match); got != w.count {
			t.Errorf("count%v = %v, want %v", match, got, w.count)
		}
	}
}
