package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
)

const shedMessage = "server busy: 2 calls in flight, the limit (GRPC_MAX_CONCURRENT_RPCS)"

func reserve(t *testing.T, f *fixture, order string) error {
	_, err := f.client.ReserveStock(ctx(t), &pb.ReserveStockRequest{OrderId: order,
		Lines: []*pb.ReservationLine{line("prod-chemex", 1)}})
	return err
}

func TestCallsPastTheLimitAreShedAndTheAcceptedOnesComplete(t *testing.T) {
	interceptor, started, release := hold()
	f := start(t, Options{MaxConcurrentRPCs: 2, Interceptors: []grpc.UnaryServerInterceptor{interceptor}})
	var wg sync.WaitGroup
	results := make(chan error, 2)
	for _, order := range []string{"o-1", "o-2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- reserve(t, f, order)
		}()
	}
	<-started
	<-started // both slots taken

	_, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	if st := wantCode(t, err, codes.ResourceExhausted); st.Message() != shedMessage {
		t.Errorf("message %q, want %q", st.Message(), shedMessage)
	}
	// Health and reflection are never shed.
	if got := servingStatus(t, f, ServiceName); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v", got)
	}
	if names := listServices(t, f.conn); !slices.Contains(names, ServiceName) {
		t.Errorf("reflection: %v", names)
	}

	close(release)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Errorf("an accepted call failed: %v", err)
		}
	}
	// The slots are free again.
	if _, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}}); err != nil {
		t.Errorf("after the burst: %v", err)
	}
}

func TestNoLimitWhenZero(t *testing.T) {
	interceptor, started, release := hold()
	f := start(t, Options{Interceptors: []grpc.UnaryServerInterceptor{interceptor}})
	const parked = 5
	results := make(chan error, parked)
	for i := range parked {
		go func() { results <- reserve(t, f, "o-"+string(rune('a'+i))) }()
	}
	for range parked {
		<-started
	}
	if _, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}}); err != nil {
		t.Errorf("shed without a limit: %v", err)
	}
	close(release)
	for range parked {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
}

// A stream holds its slot for as long as it runs; health streams (Watch)
// take none.
func TestStreamsCountAndHealthIsExempt(t *testing.T) {
	var logs bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, nil)))

	l := newLimiter(1)
	info := &grpc.StreamServerInfo{FullMethod: "/shop.x.v1.X/Stream"}
	watch := &grpc.StreamServerInfo{FullMethod: "/grpc.health.v1.Health/Watch"}
	var inner, health error
	err := l.stream(nil, panicStream{}, info, func(any, grpc.ServerStream) error {
		inner = l.stream(nil, panicStream{}, info, func(any, grpc.ServerStream) error { return nil })
		health = l.stream(nil, panicStream{}, watch, func(any, grpc.ServerStream) error { return nil })
		return nil
	})
	if err != nil {
		t.Fatalf("the first stream: %v", err)
	}
	wantCode(t, inner, codes.ResourceExhausted)
	if health != nil {
		t.Errorf("health shed: %v", health)
	}
	ran := false
	if err := l.stream(nil, panicStream{}, info, func(any, grpc.ServerStream) error {
		ran = true
		return nil
	}); err != nil || !ran {
		t.Errorf("the slot was not given back: %v", err)
	}
	if !strings.Contains(logs.String(), `"msg":"shedding calls past the concurrency limit"`) {
		t.Errorf("no WARNING line: %s", logs.String())
	}
}

// An overload writes one line per interval, not one per shed call.
func TestShedCallsAreLoggedSparingly(t *testing.T) {
	var logs bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, nil)))

	l := newLimiter(1)
	info := &grpc.UnaryServerInfo{FullMethod: "/shop.x.v1.X/Get"}
	_, err := l.unary(t.Context(), nil, info, func(ctx context.Context, _ any) (any, error) {
		for range 100 {
			if _, err := l.unary(ctx, nil, info, func(context.Context, any) (any, error) {
				return nil, errors.New("ran past the limit")
			}); grpcstatus.Code(err) != codes.ResourceExhausted {
				t.Fatalf("got %v", err)
			}
		}
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Errorf("%d log lines for 100 shed calls:\n%s", n, logs.String())
	}
	if l.shed.Load() != 100 {
		t.Errorf("shed count %d", l.shed.Load())
	}
}
