// Command inventory serves shop.inventory.v1.InventoryService: stock levels
// and idempotent reservations, kept in a bbolt file. Wiring only: config,
// logs, mesh security, tracing, listener, store, server, then serve until
// SIGTERM or SIGINT.
//
// With MESH_MTLS on it serves mutual TLS only, with the certificates of
// MESH_CERTS_DIR (reloaded when they change), and every call must pass the
// policy of MESH_POLICY_FILE; off, it serves plaintext and authorizes nothing,
// as there are no identities to go by.
//
// Exit status 2 is a configuration error, 1 any other failure to start; each
// prints one line on stderr.
//
// With MESH_METRICS_ADDRESS set it serves the RED metrics of every call for
// Prometheus at GET /metrics there; with MESH_FAULTS_FILE set it injects the
// faults that file names, re-reading it while it runs.
//
// With MESH_HEALTH_PROBE_ADDRESS set it also serves grpc.health.v1.Health,
// and nothing else, plaintext there, for the kubelet's grpc probe, which
// cannot present a client certificate to the mTLS port. It reports the
// server's own health (NOT_SERVING through the drain) and stops after it.
//
// `inventory probe` is the healthcheck instead (probe.go): it checks the
// health of the server that runs with the same environment.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/credentials"

	"github.com/shopmesh/shopmesh/services/inventory/internal/authz"
	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls"
	"github.com/shopmesh/shopmesh/services/inventory/internal/server"
	"github.com/shopmesh/shopmesh/services/inventory/internal/stock"
	"github.com/shopmesh/shopmesh/services/inventory/internal/telemetry"
)

const (
	serviceName    = "inventory"
	serviceVersion = "0.1.0"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(probe(os.Args[2:], os.LookupEnv, os.Stderr))
	}
	os.Exit(run())
}

func run() int {
	cfg, err := config.FromEnv(os.LookupEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "configuration error: %v\n", err)
		return 2
	}
	slog.SetDefault(telemetry.NewLogger(os.Stderr, serviceName, cfg.LogLevel))
	var opts server.Options
	policy, err := secure(cfg, &opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "configuration error: %v\n", err)
		return 2
	}

	// Before the listener: a signal during start-up still shuts down in order.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	tracing := &telemetry.Tracing{}
	if !cfg.TracingDisabled {
		if tracing, err = telemetry.StartTracing(ctx, serviceName, serviceVersion, cfg.TracesExporter); err != nil {
			return cannotStart(fmt.Errorf("cannot set up tracing: %w", err))
		}
	}
	defer func() {
		if err := tracing.Shutdown(); err != nil {
			slog.Warn("tracing shutdown incomplete", "error", err.Error())
		}
	}()

	metrics, err := startMetrics(ctx, cfg, policy, &opts)
	if err != nil {
		return cannotStart(err)
	}
	defer func() {
		if err := metrics.Shutdown(); err != nil {
			slog.Warn("metrics shutdown incomplete", "error", err.Error())
		}
	}()

	// Listen before opening the store: a second copy on a busy port fails
	// on the port, not on waiting for the first copy's file lock.
	listener, probe, err := listen(cfg)
	if err != nil {
		return cannotStart(err)
	}
	store, err := stock.Open(cfg.DBPath)
	if err != nil {
		_ = listener.Close()
		if probe != nil {
			_ = probe.Close()
		}
		return cannotStart(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			slog.Error("closing the store failed", "error", err.Error())
		}
	}()

	opts.Faults = server.Faults{Delay: cfg.FaultDelay, ErrorPercent: cfg.FaultErrorPercent,
		File: cfg.FaultsFile, Service: cfg.Service}
	opts.MaxConcurrentRPCs = cfg.MaxConcurrentRPCs
	opts.HealthProbe = probe
	if tracing.Enabled() {
		opts.StatsHandler = telemetry.ServerHandler(tracing.Provider())
	}
	srv := server.New(listener, store, opts)

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	logSecurity(cfg)
	slog.Info(fmt.Sprintf("serving on port %d", srv.Port()), "port", srv.Port(), "db_path", cfg.DBPath)
	if probe != nil {
		addr := probe.Addr().String()
		slog.Info("health probe at "+addr+" (plaintext, grpc.health.v1.Health only)", "health_probe_address", addr)
	}
	select {
	case <-ctx.Done():
		stop() // a second signal ends the process at once
		srv.Shutdown(cfg.Drain, cfg.Grace)
		<-served
	case err := <-served:
		slog.Error("server failed", "error", fmt.Sprint(err))
		return 1
	}
	slog.Info("stopped")
	return 0
}

// listen binds the server's address and, when cfg.HealthProbeAddr is set, the
// health probe's (nil otherwise); on an error nothing is left bound.
func listen(cfg config.Config) (net.Listener, net.Listener, error) {
	listener, err := server.Listen(cfg.ListenAddr)
	if err != nil || cfg.HealthProbeAddr == "" {
		return listener, nil, err
	}
	probe, err := server.ListenHealthProbe(cfg.HealthProbeAddr)
	if err != nil {
		_ = listener.Close()
		return nil, nil, err
	}
	return listener, probe, nil
}

// secure sets up mTLS and authorization in opts when cfg.MTLS says so, and
// returns the policy (nil with mTLS off); its error is a configuration
// error (a bad policy, unusable certificates).
func secure(cfg config.Config, opts *server.Options) (*authz.Policy, error) {
	if !cfg.MTLS {
		return nil, nil
	}
	policy, err := authz.Load(cfg.PolicyFile)
	if err != nil {
		return nil, err // file:line: key: problem
	}
	reloader, err := meshtls.NewReloader(cfg.CertsDir, cfg.Service)
	if err != nil {
		return nil, fmt.Errorf("MESH_MTLS is on but the certificate is unusable: %w", err)
	}
	opts.Credentials = credentials.NewTLS(reloader.TLSConfig())
	// The server's stats handler starts the span before any interceptor, so
	// a denial is marked on the call's own server span.
	opts.Interceptors = append(opts.Interceptors, authz.UnaryServerInterceptor(policy, cfg.Service))
	opts.StreamInterceptors = append(opts.StreamInterceptors, authz.StreamServerInterceptor(policy, cfg.Service))
	return policy, nil
}

// startMetrics serves the metrics when cfg.MetricsAddr is set and puts
// their stats handler in opts; nil Metrics when metrics are off. Callers
// are named by the identity the policy checks (none without mTLS).
func startMetrics(ctx context.Context, cfg config.Config, policy *authz.Policy,
	opts *server.Options) (*telemetry.Metrics, error) {
	if cfg.MetricsAddr == "" {
		return nil, nil
	}
	metrics, err := telemetry.StartMetrics(ctx, cfg.MetricsAddr, serviceName, serviceVersion)
	if err != nil {
		return nil, err
	}
	opts.Metrics, err = telemetry.ServerMetrics(metrics.Provider(),
		func(ctx context.Context) string { return authz.Caller(ctx, policy) })
	if err != nil {
		_ = metrics.Shutdown()
		return nil, err
	}
	slog.Info("metrics at http://"+metrics.Addr()+"/metrics", "metrics_address", metrics.Addr())
	return metrics, nil
}

// logSecurity says how the server is secured, once it is about to serve.
func logSecurity(cfg config.Config) {
	if !cfg.MTLS {
		slog.Info("mTLS is off: serving plaintext without authorization (MESH_MTLS=on turns both on)")
		return
	}
	identity := "spiffe://shop.local/" + cfg.Service
	slog.Info("mTLS is on: serving as "+identity+", callers checked against "+cfg.PolicyFile,
		"identity", identity, "certs_dir", cfg.CertsDir, "policy_file", cfg.PolicyFile)
}

func cannotStart(err error) int {
	fmt.Fprintf(os.Stderr, "cannot start: %v\n", err)
	return 1
}
