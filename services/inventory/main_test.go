package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
)

// runWithStderr calls run and returns its exit status and what it wrote to stderr.
func runWithStderr(t *testing.T) (int, string) {
	t.Helper()
	file, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	saved := os.Stderr
	os.Stderr = file
	code := run()
	os.Stderr = saved
	out, err := os.ReadFile(file.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

func TestConfigurationErrorExitsTwo(t *testing.T) {
	t.Setenv("FAULT_ERROR_PERCENT", "150")
	code, stderr := runWithStderr(t)
	if code != 2 || stderr != "configuration error: FAULT_ERROR_PERCENT must be at most 100, got 150\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestABadMetricsAddressIsAConfigurationError(t *testing.T) {
	t.Setenv("MESH_METRICS_ADDRESS", "9463")
	code, stderr := runWithStderr(t)
	if code != 2 || stderr != "configuration error: MESH_METRICS_ADDRESS must be host:port, got \"9463\"\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestAnExporterNotBuiltInIsAConfigurationError(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", " Zipkin ")
	code, stderr := runWithStderr(t)
	if code != 2 || stderr != "configuration error: OTEL_TRACES_EXPORTER must be one of otlp, none, got 'zipkin'\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestABusyMetricsPortExitsOne(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv("MESH_METRICS_ADDRESS", busy.Addr().String())
	t.Setenv("GRPC_LISTEN_ADDR", "127.0.0.1:0")
	t.Setenv("INVENTORY_DB_PATH", filepath.Join(t.TempDir(), "inventory.db"))
	t.Setenv("OTEL_SDK_DISABLED", "true")
	t.Setenv("MESH_MTLS", "off")
	code, stderr := runWithStderr(t)
	want := "cannot start: cannot listen on " + busy.Addr().String() + " (MESH_METRICS_ADDRESS): "
	if code != 1 || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestABadHealthProbeAddressIsAConfigurationError(t *testing.T) {
	t.Setenv("MESH_HEALTH_PROBE_ADDRESS", "0.0.0.0")
	code, stderr := runWithStderr(t)
	if code != 2 || stderr != "configuration error: MESH_HEALTH_PROBE_ADDRESS must be host:port, got \"0.0.0.0\"\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestABusyHealthProbePortExitsOne(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv("MESH_HEALTH_PROBE_ADDRESS", busy.Addr().String())
	t.Setenv("GRPC_LISTEN_ADDR", "127.0.0.1:0")
	t.Setenv("INVENTORY_DB_PATH", filepath.Join(t.TempDir(), "inventory.db"))
	t.Setenv("OTEL_SDK_DISABLED", "true")
	t.Setenv("MESH_MTLS", "off")
	code, stderr := runWithStderr(t)
	want := "cannot start: cannot listen on " + busy.Addr().String() + " (MESH_HEALTH_PROBE_ADDRESS): "
	if code != 1 || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestListenBindsTheHealthProbeOnlyWhenAsked(t *testing.T) {
	listener, probe, err := listen(config.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	_ = listener.Close()
	if probe != nil {
		_ = probe.Close()
		t.Error("a health probe listener without MESH_HEALTH_PROBE_ADDRESS")
	}
	listener, probe, err = listen(config.Config{ListenAddr: "127.0.0.1:0", HealthProbeAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	if probe == nil {
		t.Fatal("no health probe listener with MESH_HEALTH_PROBE_ADDRESS set")
	}
	_ = probe.Close()
}

func TestBusyPortExitsOne(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv("GRPC_LISTEN_ADDR", busy.Addr().String())
	t.Setenv("INVENTORY_DB_PATH", filepath.Join(t.TempDir(), "inventory.db"))
	t.Setenv("OTEL_SDK_DISABLED", "true")
	t.Setenv("MESH_MTLS", "off") // whatever config.MTLSDefault says
	code, stderr := runWithStderr(t)
	want := "cannot start: cannot listen on " + busy.Addr().String() + ": "
	if code != 1 || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
