// Package server is the inventory's gRPC face: the servicer that maps
// protobuf to the stock domain and domain errors to status codes, and the
// server around it with health, reflection, tracing, a concurrency limit,
// panic recovery, fault injection, optional transport credentials (mTLS), an
// optional plaintext health probe listener and a graceful shutdown.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/stock"
)

// ServiceName is the contract's fully qualified service name, as health
// checks and reflection know it.
const ServiceName = "shop.inventory.v1.InventoryService"

// HealthProbeAddressVariable names the health probe's listener in every
// language.
const HealthProbeAddressVariable = "MESH_HEALTH_PROBE_ADDRESS"

// Options are the optional parts of a server; the zero value is a plain one.
type Options struct {
	// Faults to inject into the inventory's own RPCs.
	Faults Faults
	// StatsHandler traces calls; nil when tracing is off, so that no
	// instrumentation runs on the request path at all.
	StatsHandler stats.Handler
	// Metrics records the RED metrics of every call (health and reflection
	// too); nil when metrics are off. A stats handler rather than an
	// interceptor: it sees each call from its arrival to its status sent,
	// shed, denied and faulted calls included.
	Metrics stats.Handler
	// Interceptors run outermost, before panic recovery and faults, and
	// inside the stats handler's span.
	Interceptors []grpc.UnaryServerInterceptor
	// StreamInterceptors are Interceptors for streaming calls.
	StreamInterceptors []grpc.StreamServerInterceptor
	// Credentials secure the listener (mTLS); nil serves plaintext.
	Credentials credentials.TransportCredentials
	// MaxConcurrentRPCs is GRPC_MAX_CONCURRENT_RPCS: calls past this many in
	// flight end at once with RESOURCE_EXHAUSTED (health and reflection are
	// never shed); 0 is no limit.
	MaxConcurrentRPCs int
	// HealthProbe, when set, serves grpc.health.v1.Health alone, plaintext
	// whatever Credentials say: the kubelet's grpc probe presents no client
	// certificate. It answers from the server's own health, so it reports
	// NOT_SERVING through the drain, and stops once the server has stopped.
	HealthProbe net.Listener
}

// Server is a gRPC server bound to its listener, not yet serving.
type Server struct {
	grpc     *grpc.Server
	health   *health.Server
	listener net.Listener
	// probe serves health alone on probeListener; nil without
	// Options.HealthProbe.
	probe         *grpc.Server
	probeListener net.Listener
}

// Listen binds addr; its error reads "cannot listen on ADDR: REASON".
func Listen(addr string) (net.Listener, error) {
	return listen(addr, "")
}

// ListenHealthProbe binds addr for Options.HealthProbe; its error reads
// "cannot listen on ADDR (MESH_HEALTH_PROBE_ADDRESS): REASON".
func ListenHealthProbe(addr string) (net.Listener, error) {
	return listen(addr, " ("+HealthProbeAddressVariable+")")
}

func listen(addr, variable string) (net.Listener, error) {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		// net's error repeats the operation and address; keep the reason.
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return nil, fmt.Errorf("cannot listen on %s%s: %w", addr, variable, err)
	}
	return listener, nil
}

// New builds the server on listener around the store. Health reports
// NOT_SERVING until Serve runs.
//
// The concurrency limit runs first, before opts.Interceptors: a shed call
// costs no authorization check, and still has its span (the stats handler
// starts it before any interceptor).
func New(listener net.Listener, store *stock.Store, opts Options) *Server {
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if opts.MaxConcurrentRPCs > 0 {
		limit := newLimiter(opts.MaxConcurrentRPCs)
		unary, stream = append(unary, limit.unary), append(stream, limit.stream)
	}
	unary = append(append(unary, opts.Interceptors...), recoverUnary)
	if inject := opts.Faults.injector(); inject != nil {
		unary = append(unary, faultUnary(inject))
	}
	stream = append(append(stream, opts.StreamInterceptors...), recoverStream)
	serverOpts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	if opts.Credentials != nil {
		serverOpts = append(serverOpts, grpc.Creds(opts.Credentials))
	}
	for _, handler := range []stats.Handler{opts.StatsHandler, opts.Metrics} {
		if handler != nil {
			serverOpts = append(serverOpts, grpc.StatsHandler(handler))
		}
	}
	s := &Server{grpc: grpc.NewServer(serverOpts...), health: health.NewServer(), listener: listener}
	pb.RegisterInventoryServiceServer(s.grpc, &servicer{store: store})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	if opts.HealthProbe != nil {
		// No credentials, interceptors or stats handlers: there is no
		// identity to authorize, and the kubelet's probes are not calls
		// worth tracing or counting.
		s.probe, s.probeListener = grpc.NewServer(), opts.HealthProbe
		healthpb.RegisterHealthServer(s.probe, s.health)
	}
	s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

func (s *Server) setHealth(status healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range []string{"", ServiceName} {
		s.health.SetServingStatus(name, status)
	}
}

// Port is the bound TCP port (the chosen one when the address said 0).
func (s *Server) Port() int {
	if addr, ok := s.listener.Addr().(*net.TCPAddr); ok {
		return addr.Port
	}
	return 0
}

// Serve reports SERVING and serves until Shutdown, on the health probe too
// when there is one; it returns nil once both have stopped.
func (s *Server) Serve() error {
	s.setHealth(healthpb.HealthCheckResponse_SERVING)
	probed := s.serveProbe()
	err := s.grpc.Serve(s.listener)
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	if err != nil {
		s.stopProbe() // Shutdown will not come to it
	}
	<-probed
	return err
}

// serveProbe serves the health probe, if any, until stopProbe; the channel
// closes when it has stopped. A probe that fails is logged, not fatal, as a
// metrics listener's is: the probes failing say enough.
func (s *Server) serveProbe() <-chan struct{} {
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		if s.probe == nil {
			return
		}
		err := s.probe.Serve(s.probeListener)
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			slog.Error("health probe listener failed", "error", err.Error())
		}
	}()
	return probed
}

// stopProbe stops the health probe at once: a Watch stream never ends by
// itself, and a Check has nothing left to wait for once the server is gone.
func (s *Server) stopProbe() {
	if s.probe != nil {
		s.probe.Stop()
	}
}

// Shutdown stops in the order a load balancer needs: health turns
// NOT_SERVING so probes and clients stop sending new work; after drain the
// server stops accepting calls; calls in flight get grace to finish before
// they are cancelled. It returns once the server has stopped, and the health
// probe after it: the probe answers NOT_SERVING all along.
func (s *Server) Shutdown(drain, grace time.Duration) {
	slog.Info("shutting down", "drain_seconds", drain.Seconds(), "grace_seconds", grace.Seconds())
	s.health.Shutdown()
	time.Sleep(drain)
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		slog.Warn("grace period over, cancelling calls in flight")
		s.grpc.Stop()
		<-stopped
	}
	s.stopProbe()
	slog.Info("stopped serving")
}
