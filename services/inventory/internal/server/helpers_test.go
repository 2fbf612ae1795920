package server

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/stock"
)

// A deadline for every test call: a hang fails the test instead of the run.
const callTimeout = 10 * time.Second

type fixture struct {
	srv    *Server
	store  *stock.Store
	conn   *grpc.ClientConn
	client pb.InventoryServiceClient
	health healthpb.HealthClient
}

// start runs a real server on a free loopback port over a fresh store.
func start(t *testing.T, opts Options) *fixture {
	t.Helper()
	store, err := stock.Open(filepath.Join(t.TempDir(), "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	listener, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(listener, store, opts)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	conn, err := grpc.NewClient(listener.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.grpc.Stop()
		srv.stopProbe()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = store.Close()
	})
	return &fixture{srv: srv, store: store, conn: conn,
		client: pb.NewInventoryServiceClient(conn), health: healthpb.NewHealthClient(conn)}
}

// startWithProbe is start with a health probe on another free loopback
// port, and a plaintext connection to that probe.
func startWithProbe(t *testing.T, opts Options) (*fixture, *grpc.ClientConn) {
	t.Helper()
	probe, err := ListenHealthProbe("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.HealthProbe = probe
	f := start(t, opts)
	conn, err := grpc.NewClient(probe.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return f, conn
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return c
}

func wantCode(t *testing.T, err error, code codes.Code) *status.Status {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("got %v %q, want %v", st.Code(), st.Message(), code)
	}
	return st
}

func line(id string, q int32) *pb.ReservationLine {
	return &pb.ReservationLine{ProductId: id, Quantity: q}
}
