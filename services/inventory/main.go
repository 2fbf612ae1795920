// Command inventory serves shop.inventory.v1.InventoryService: stock levels
// and idempotent reservations, kept in a bbolt file. Wiring only: config,
// logs, tracing, listener, store, server, then serve until SIGTERM or SIGINT.
//
// Exit status 2 is a configuration error, 1 any other failure to start; each
// prints one line on stderr.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/server"
	"github.com/shopmesh/shopmesh/services/inventory/internal/stock"
	"github.com/shopmesh/shopmesh/services/inventory/internal/telemetry"
)

const (
	serviceName    = "inventory"
	serviceVersion = "0.1.0"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := config.FromEnv(os.LookupEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "configuration error: %v\n", err)
		return 2
	}
	slog.SetDefault(telemetry.NewLogger(os.Stderr, serviceName, cfg.LogLevel))

	// Before the listener: a signal during start-up still shuts down in order.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	tracing := &telemetry.Tracing{}
	if !cfg.TracingDisabled {
		if tracing, err = telemetry.StartTracing(ctx, serviceName, serviceVersion); err != nil {
			return cannotStart(fmt.Errorf("cannot set up tracing: %w", err))
		}
	}
	defer func() {
		if err := tracing.Shutdown(); err != nil {
			slog.Warn("tracing shutdown incomplete", "error", err.Error())
		}
	}()

	// Listen before opening the store: a second copy on a busy port fails
	// on the port, not on waiting for the first copy's file lock.
	listener, err := server.Listen(cfg.ListenAddr)
	if err != nil {
		return cannotStart(err)
	}
	store, err := stock.Open(cfg.DBPath)
	if err != nil {
		_ = listener.Close()
		return cannotStart(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			slog.Error("closing the store failed", "error", err.Error())
		}
	}()

	opts := server.Options{
		Faults: server.Faults{Delay: cfg.FaultDelay, ErrorPercent: cfg.FaultErrorPercent},
	}
	if tracing.Enabled() {
		opts.StatsHandler = telemetry.ServerHandler(tracing.Provider())
	}
	srv := server.New(listener, store, opts)

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	slog.Info(fmt.Sprintf("serving on port %d", srv.Port()), "port", srv.Port(), "db_path", cfg.DBPath)
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

func cannotStart(err error) int {
	fmt.Fprintf(os.Stderr, "cannot start: %v\n", err)
	return 1
}
