package server

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errInternal is all a client learns of a bug; the log has the rest.
var errInternal = status.Error(codes.Internal, "internal error")

// recoverUnary turns a panic in a handler into INTERNAL: grpc-go would
// otherwise let it kill the process with every other call in flight.
func recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			logPanic(ctx, info.FullMethod, p)
			resp, err = nil, errInternal
		}
	}()
	return handler(ctx, req)
}

func recoverStream(srv any, stream grpc.ServerStream, info *grpc.StreamServerInfo,
	handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			logPanic(stream.Context(), info.FullMethod, p)
			err = errInternal
		}
	}()
	return handler(srv, stream)
}

func logPanic(ctx context.Context, method string, p any) {
	// One JSON line: the stack is a field, never loose lines on stderr.
	slog.ErrorContext(ctx, "panic in handler", "method", method,
		"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
}

// Faults delays every call of the inventory's own RPCs, then fails a share
// of them with UNAVAILABLE, to show deadlines, retries and breakers at work.
type Faults struct {
	Delay        time.Duration
	ErrorPercent float64 // 0..100
}

// Enabled reports whether there is anything to inject.
func (f Faults) Enabled() bool { return f.Delay > 0 || f.ErrorPercent > 0 }

// infrastructure services are never faulted: probes must tell the truth
// about the process, not about the injected faults.
func infrastructure(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

func (f Faults) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler) (any, error) {
	if infrastructure(info.FullMethod) {
		return handler(ctx, req)
	}
	if f.Delay > 0 {
		timer := time.NewTimer(f.Delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if rand.Float64()*100 < f.ErrorPercent {
		return nil, status.Errorf(codes.Unavailable, "injected fault in %s", info.FullMethod)
	}
	return handler(ctx, req)
}
