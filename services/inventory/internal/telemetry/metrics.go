package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// MetricsAddressVariable names the metrics listener in every language.
const MetricsAddressVariable = "MESH_METRICS_ADDRESS"

// Metrics is what StartMetrics set up: a meter provider read by the
// Prometheus exporter, served over HTTP at GET /metrics.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	server   *http.Server
	listener net.Listener
	served   chan struct{}
}

// StartMetrics serves the Prometheus text format at GET /metrics on addr
// (host:port; port 0 picks a free port), from a meter provider whose
// resource is the traces' (service.name=name unless OTEL_SERVICE_NAME says
// otherwise).
//
// The provider is not made the global one: otelgrpc would record its own
// rpc metrics through it, and each call is to be counted once, by
// ServerMetrics. The registry is the exporter's own, so only the metrics of
// this provider are served (and tests can start several).
func StartMetrics(ctx context.Context, addr, name, version string) (*Metrics, error) {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return nil, err
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return nil, fmt.Errorf("cannot listen on %s (%s): %w", addr, MetricsAddressVariable, err)
	}
	provider := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exporter),
		sdkmetric.WithResource(newResource(ctx, name, version)),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{
		ErrorLog: promErrorLog{},
	}))
	m := &Metrics{
		provider: provider,
		server:   &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		listener: listener,
		served:   make(chan struct{}),
	}
	go func() {
		defer close(m.served)
		if err := m.server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			slog.Error("metrics listener failed", "error", err.Error())
		}
	}()
	return m, nil
}

// promErrorLog turns the handler's failures to gather into log lines.
type promErrorLog struct{}

func (promErrorLog) Println(v ...any) {
	slog.Warn("metrics gathering failed", "error", fmt.Sprint(v...))
}

// Provider is the meter provider the metrics are recorded with.
func (m *Metrics) Provider() metric.MeterProvider { return m.provider }

// Addr is the listener's address, host:port with the port chosen.
func (m *Metrics) Addr() string { return m.listener.Addr().String() }

// Shutdown stops the listener and the provider, giving up after a few
// seconds. A nil Metrics (metrics off) has nothing to stop.
func (m *Metrics) Shutdown() error {
	if m == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := m.server.Shutdown(ctx)
	<-m.served
	return errors.Join(err, m.provider.Shutdown(ctx))
}
