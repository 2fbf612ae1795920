package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/services/inventory/internal/faults"
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

// Faults are the fault injection settings: the start-time rule of
// FAULT_DELAY_MS and FAULT_ERROR_PERCENT (delay every call of the
// inventory's own RPCs, then fail a share with UNAVAILABLE), and the fault
// file of MESH_FAULTS_FILE, re-read while serving, whose rules come first.
type Faults struct {
	Delay        time.Duration
	ErrorPercent float64 // 0..100
	// File is the fault file's path; "" for none. It need not exist yet.
	File string
	// Service is whose entries of File apply (MESH_SERVICE_IDENTITY); ""
	// is the inventory.
	Service string
}

// Enabled reports whether the start-time rule injects anything.
func (f Faults) Enabled() bool { return f.Delay > 0 || f.ErrorPercent > 0 }

// injector is the injector of these settings, nil when there is nothing
// that could ever inject a fault (no start-time rule, no file).
func (f Faults) injector() *faults.Injector {
	var env *faults.Rule
	if f.Enabled() {
		slog.Warn("fault injection on", "delay_ms", f.Delay.Milliseconds(), "error_percent", f.ErrorPercent)
		env = &faults.Rule{Delay: f.Delay, ErrorRatio: f.ErrorPercent / 100, Code: codes.Unavailable}
	}
	var file *faults.File
	if f.File != "" {
		service := f.Service
		if service == "" {
			service = defaultService
		}
		file = faults.NewFile(f.File, service)
	}
	if env == nil && file == nil {
		return nil
	}
	return faults.NewInjector(file, env)
}

// defaultService is the inventory's name in the mesh and the fault file.
const defaultService = "inventory"

// infrastructure services are never faulted: probes must tell the truth
// about the process, not about the injected faults.
func infrastructure(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

// faultUnary injects faults into unary calls. The inventory's own RPCs are
// all unary; the streaming ones it serves are health and reflection, never
// faulted, so there is no stream counterpart.
func faultUnary(inject *faults.Injector) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo,
		handler grpc.UnaryHandler) (any, error) {
		if infrastructure(info.FullMethod) {
			return handler(ctx, req)
		}
		if err := inject.Inject(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}
