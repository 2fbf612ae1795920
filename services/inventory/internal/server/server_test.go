package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
)

func servingStatus(t *testing.T, f *fixture, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	res, err := f.health.Check(ctx(t), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health of %q: %v", service, err)
	}
	return res.GetStatus()
}

func TestHealthIsServing(t *testing.T) {
	f := start(t, Options{})
	for _, name := range []string{"", ServiceName, pb.InventoryService_ServiceDesc.ServiceName} {
		if got := servingStatus(t, f, name); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%q: %v", name, got)
		}
	}
}

func listServices(t *testing.T, conn *grpc.ClientConn) []string {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	res, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

func TestReflectionListsServices(t *testing.T) {
	f := start(t, Options{})
	names := listServices(t, f.conn)
	for _, want := range []string{ServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from %v", want, names)
		}
	}
}

func TestInjectedErrorsSpareHealthAndReflection(t *testing.T) {
	f := start(t, Options{Faults: Faults{ErrorPercent: 100}})
	_, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	st := wantCode(t, err, codes.Unavailable)
	if st.Message() != "injected fault in /shop.inventory.v1.InventoryService/GetStock" {
		t.Errorf("message %q", st.Message())
	}
	if got := servingStatus(t, f, ServiceName); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v", got)
	}
	if names := listServices(t, f.conn); !slices.Contains(names, ServiceName) {
		t.Errorf("reflection: %v", names)
	}
}

func TestInjectedDelayAppliesToServiceOnly(t *testing.T) {
	f := start(t, Options{Faults: Faults{Delay: time.Hour}})
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := f.client.GetStock(short, &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	wantCode(t, err, codes.DeadlineExceeded)
	if _, err := f.health.Check(ctx(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health delayed or failed: %v", err)
	}
}

// panicStream is the least ServerStream the recovery interceptor needs.
type panicStream struct{ grpc.ServerStream }

func (panicStream) Context() context.Context { return context.Background() }

func TestPanicsBecomeInternal(t *testing.T) {
	var logs bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, nil)))

	info := &grpc.UnaryServerInfo{FullMethod: "/shop.inventory.v1.InventoryService/GetStock"}
	_, err := recoverUnary(t.Context(), nil, info, func(context.Context, any) (any, error) {
		panic("boom")
	})
	if st := wantCode(t, err, codes.Internal); st.Message() != "internal error" {
		t.Errorf("message %q", st.Message())
	}
	if !strings.Contains(logs.String(), `"method":"/shop.inventory.v1.InventoryService/GetStock"`) {
		t.Errorf("panic not logged with its method: %s", logs.String())
	}
	err = recoverStream(nil, panicStream{}, &grpc.StreamServerInfo{FullMethod: "/x.Y/Z"},
		func(any, grpc.ServerStream) error { panic("boom") })
	wantCode(t, err, codes.Internal)
}

// hold returns an interceptor that parks ReserveStock calls until released
// (or their context ends), and a channel reporting each parked call.
func hold() (grpc.UnaryServerInterceptor, chan struct{}, chan struct{}) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	interceptor := func(ctx context.Context, req any, info *grpc.UnaryServerInfo,
		handler grpc.UnaryHandler) (any, error) {
		if strings.HasSuffix(info.FullMethod, "/ReserveStock") {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return handler(ctx, req)
	}
	return interceptor, started, release
}

func TestShutdownLetsCallsInFlightFinish(t *testing.T) {
	interceptor, started, release := hold()
	f := start(t, Options{Interceptors: []grpc.UnaryServerInterceptor{interceptor}})
	result := make(chan error, 1)
	go func() {
		_, err := f.client.ReserveStock(ctx(t), &pb.ReserveStockRequest{OrderId: "o-inflight",
			Lines: []*pb.ReservationLine{line("prod-chemex", 1)}})
		result <- err
	}()
	<-started
	stopped := make(chan struct{})
	go func() {
		f.srv.Shutdown(0, callTimeout)
		close(stopped)
	}()
	// Health turns NOT_SERVING first; asked in-process, since the listener
	// is about to close.
	for {
		res, err := f.srv.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: ServiceName})
		if err == nil && res.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-result; err != nil {
		t.Fatalf("call in flight failed: %v", err)
	}
	<-stopped
	if _, err := f.store.Commit("o-inflight"); err != nil {
		t.Errorf("the in-flight reservation was not kept: %v", err)
	}
}

func TestShutdownCancelsCallsAfterGrace(t *testing.T) {
	interceptor, started, _ := hold()
	f := start(t, Options{Interceptors: []grpc.UnaryServerInterceptor{interceptor}})
	result := make(chan error, 1)
	go func() {
		_, err := f.client.ReserveStock(ctx(t), &pb.ReserveStockRequest{OrderId: "o-stuck",
			Lines: []*pb.ReservationLine{line("prod-chemex", 1)}})
		result <- err
	}()
	<-started
	f.srv.Shutdown(0, 50*time.Millisecond) // returns although the call never finishes by itself
	if err := <-result; err == nil {
		t.Error("a call still running after the grace period succeeded")
	}
}

func TestHealthProbeServesHealthOnly(t *testing.T) {
	f, conn := startWithProbe(t, Options{})
	probe := healthpb.NewHealthClient(conn)
	for _, name := range []string{"", ServiceName} {
		res, err := probe.Check(ctx(t), &healthpb.HealthCheckRequest{Service: name})
		if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("probe's health of %q: %v, %v", name, res.GetStatus(), err)
		}
	}
	_, err := pb.NewInventoryServiceClient(conn).GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	wantCode(t, err, codes.Unimplemented)
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx(t))
	if err == nil {
		// The status comes with the first reply; Send may already see the stream end.
		_ = stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.Unimplemented)
	// The server itself is untouched by it.
	if _, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}}); err != nil {
		t.Errorf("GetStock on the server: %v", err)
	}
}

func TestNoHealthProbeUnlessAsked(t *testing.T) {
	if f := start(t, Options{}); f.srv.probe != nil {
		t.Error("a health probe server without Options.HealthProbe")
	}
}

func TestListenHealthProbeNamesTheVariable(t *testing.T) {
	busy, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = ListenHealthProbe(busy.Addr().String())
	want := "cannot listen on " + busy.Addr().String() + " (MESH_HEALTH_PROBE_ADDRESS): "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want %s...", err, want)
	}
}

func TestHealthProbeReportsNotServingUntilTheServerHasStopped(t *testing.T) {
	interceptor, started, release := hold()
	f, conn := startWithProbe(t, Options{Interceptors: []grpc.UnaryServerInterceptor{interceptor}})
	probe := healthpb.NewHealthClient(conn)
	result := make(chan error, 1)
	go func() {
		_, err := f.client.ReserveStock(ctx(t), &pb.ReserveStockRequest{OrderId: "o-probed",
			Lines: []*pb.ReservationLine{line("prod-chemex", 1)}})
		result <- err
	}()
	<-started
	stopped := make(chan struct{})
	go func() {
		f.srv.Shutdown(50*time.Millisecond, callTimeout)
		close(stopped)
	}()

	// The drain: the probe port says NOT_SERVING, over the network.
	for status := healthpb.HealthCheckResponse_SERVING; status != healthpb.HealthCheckResponse_NOT_SERVING; {
		res, err := probe.Check(ctx(t), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("probe during the drain: %v", err)
		}
		status = res.GetStatus()
	}
	// Past the drain, the server's listener is closed, but the call in
	// flight keeps it from having stopped: the probe still answers.
	for deadline := time.Now().Add(callTimeout); ; time.Sleep(time.Millisecond) {
		c, err := net.Dial("tcp", f.srv.listener.Addr().String())
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the server still accepts connections after the drain")
		}
	}
	res, err := probe.Check(ctx(t), &healthpb.HealthCheckRequest{})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("probe while a call is in flight: %v, %v; want NOT_SERVING", res.GetStatus(), err)
	}
	select {
	case <-stopped:
		t.Fatal("Shutdown returned with a call in flight")
	default:
	}

	close(release)
	if err := <-result; err != nil {
		t.Fatalf("call in flight failed: %v", err)
	}
	<-stopped
	// Stopped with the server: nothing answers on the probe port any more.
	_, err = probe.Check(ctx(t), &healthpb.HealthCheckRequest{})
	wantCode(t, err, codes.Unavailable)
}
