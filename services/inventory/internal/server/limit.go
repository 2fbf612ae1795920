package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxConcurrentRPCsVariable names the limit in every language (mesh/server.py,
// payments' config.ts): calls one server runs at once; 0 turns it off.
const MaxConcurrentRPCsVariable = "GRPC_MAX_CONCURRENT_RPCS"

// limiter sheds calls past its capacity in flight with RESOURCE_EXHAUSTED,
// at once: an overload ends in a clear status instead of a queue that grows
// until calls time out. Health and reflection are neither counted nor shed,
// so a probe reaches a busy server and hears that it is up.
type limiter struct {
	slots   chan struct{} // a token per call in flight
	err     error         // the one status every shed call gets
	shed    atomic.Int64  // calls refused since start
	mu      sync.Mutex    // guards the log throttle below
	logged  time.Time
	logShed int64
}

// limiterLogInterval spaces the WARNING lines: an overload would otherwise
// write one per shed call.
const limiterLogInterval = 10 * time.Second

func newLimiter(limit int) *limiter {
	return &limiter{
		slots: make(chan struct{}, limit),
		err: status.Error(codes.ResourceExhausted, fmt.Sprintf(
			"server busy: %d calls in flight, the limit (%s)", limit, MaxConcurrentRPCsVariable)),
	}
}

// acquire takes a slot without waiting; false means the call is to be shed.
func (l *limiter) acquire(ctx context.Context, method string) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	shed := l.shed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.logged.IsZero() || now.Sub(l.logged) >= limiterLogInterval {
		slog.WarnContext(ctx, "shedding calls past the concurrency limit",
			"limit", cap(l.slots), "variable", MaxConcurrentRPCsVariable,
			"shed_since_last_line", shed-l.logShed, "method", method)
		l.logged, l.logShed = now, shed
	}
	return false
}

func (l *limiter) release() { <-l.slots }

func (l *limiter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler) (any, error) {
	if infrastructure(info.FullMethod) {
		return handler(ctx, req)
	}
	if !l.acquire(ctx, info.FullMethod) {
		return nil, l.err
	}
	defer l.release()
	return handler(ctx, req)
}

// stream holds its slot for as long as the stream lasts.
func (l *limiter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo,
	handler grpc.StreamHandler) error {
	if infrastructure(info.FullMethod) {
		return handler(srv, ss)
	}
	if !l.acquire(ss.Context(), info.FullMethod) {
		return l.err
	}
	defer l.release()
	return handler(srv, ss)
}
