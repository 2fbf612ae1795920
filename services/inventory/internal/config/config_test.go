package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
)

func lookup(env map[string]string) LookupFunc {
	return func(name string) (string, bool) {
		value, ok := env[name]
		return value, ok
	}
}

// certsDir is a certificates folder with the files service needs.
func certsDir(t *testing.T, service string) string {
	dir := t.TempDir()
	meshtlstest.WriteDir(t, dir, service)
	return dir
}

func TestDefaults(t *testing.T) {
	// Certificates, so that this holds whichever way MTLSDefault points.
	dir := certsDir(t, "inventory")
	cfg, err := FromEnv(lookup(map[string]string{"MESH_CERTS_DIR": dir}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr: "0.0.0.0:50053",
		DBPath:     "inventory.db",
		Drain:      500 * time.Millisecond,
		Grace:      10 * time.Second,
		LogLevel:   slog.LevelInfo,
		MTLS:       MTLSDefault,
		CertsDir:   dir,
		Service:    "inventory",
		PolicyFile: "mesh/policy.yaml",

		TracesExporter:    "otlp",
		MaxConcurrentRPCs: MaxConcurrentRPCsDefault,
	}
	if cfg != want {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

func TestValuesAreRead(t *testing.T) {
	cfg, err := FromEnv(lookup(map[string]string{
		"GRPC_LISTEN_ADDR":          " 127.0.0.1:0 ",
		"INVENTORY_DB_PATH":         "/data/inventory.db",
		"SHUTDOWN_DRAIN_SECONDS":    "0",
		"SHUTDOWN_GRACE_SECONDS":    "2.5",
		"FAULT_DELAY_MS":            "150",
		"FAULT_ERROR_PERCENT":       "12.5",
		"LOG_LEVEL":                 "warning",
		"OTEL_SDK_DISABLED":         "TRUE",
		"OTEL_TRACES_EXPORTER":      " None ",
		"MESH_MTLS":                 "On",
		"MESH_CERTS_DIR":            certsDir(t, "orders"),
		"MESH_SERVICE_IDENTITY":     "spiffe://shop.local/orders",
		"MESH_POLICY_FILE":          "/etc/shopmesh/policy.yaml",
		"GRPC_MAX_CONCURRENT_RPCS":  "50",
		"MESH_FAULTS_FILE":          " /etc/shopmesh/faults.yaml ",
		"MESH_METRICS_ADDRESS":      "0.0.0.0:9463",
		"MESH_HEALTH_PROBE_ADDRESS": " 0.0.0.0:8086 ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr:        "127.0.0.1:0",
		DBPath:            "/data/inventory.db",
		Drain:             0,
		Grace:             2500 * time.Millisecond,
		FaultDelay:        150 * time.Millisecond,
		FaultErrorPercent: 12.5,
		LogLevel:          slog.LevelWarn,
		TracingDisabled:   true,
		TracesExporter:    "none",
		MTLS:              true,
		CertsDir:          cfg.CertsDir,
		Service:           "orders",
		PolicyFile:        "/etc/shopmesh/policy.yaml",
		MaxConcurrentRPCs: 50,
		FaultsFile:        "/etc/shopmesh/faults.yaml",
		MetricsAddr:       "0.0.0.0:9463",
		HealthProbeAddr:   "0.0.0.0:8086",
	}
	if cfg != want {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

func TestBlankMeansDefault(t *testing.T) {
	// MESH_MTLS off: not about mTLS, so no certificates needed.
	cfg, err := FromEnv(lookup(map[string]string{"LOG_LEVEL": "  ", "OTEL_SDK_DISABLED": "no",
		"OTEL_TRACES_EXPORTER": " ", "MESH_MTLS": "off"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != slog.LevelInfo || cfg.TracingDisabled || cfg.TracesExporter != "otlp" {
		t.Errorf("got %+v", cfg)
	}
}

func TestMalformedValuesNameTheVariable(t *testing.T) {
	cases := []struct{ name, value string }{
		{"GRPC_LISTEN_ADDR", "localhost"},
		{"GRPC_LISTEN_ADDR", ":50053"},
		{"GRPC_LISTEN_ADDR", "0.0.0.0:65536"},
		{"GRPC_LISTEN_ADDR", "0.0.0.0:-1"},
		{"GRPC_LISTEN_ADDR", "0.0.0.0:port"},
		{"SHUTDOWN_DRAIN_SECONDS", "soon"},
		{"SHUTDOWN_DRAIN_SECONDS", "-1"},
		{"SHUTDOWN_GRACE_SECONDS", "inf"},
		{"SHUTDOWN_GRACE_SECONDS", "NaN"},
		{"FAULT_DELAY_MS", "1.5"},
		{"FAULT_DELAY_MS", "-3"},
		{"FAULT_DELAY_MS", "99999999999999"},
		{"FAULT_ERROR_PERCENT", "101"},
		{"FAULT_ERROR_PERCENT", "-0.1"},
		{"FAULT_ERROR_PERCENT", "half"},
		{"LOG_LEVEL", "verbose"},
		{"OTEL_TRACES_EXPORTER", "zipkin"},
		{"OTEL_TRACES_EXPORTER", "console"},
		{"OTEL_TRACES_EXPORTER", "otlp,none"},
		{"MESH_MTLS", "maybe"},
		{"MESH_MTLS", "2"},
		{"MESH_SERVICE_IDENTITY", "warehouse"},
		{"MESH_SERVICE_IDENTITY", "Inventory"},
		{"MESH_SERVICE_IDENTITY", "spiffe://other.domain/inventory"},
		{"MESH_SERVICE_IDENTITY", "spiffe://shop.local/inventory/x"},
		{"GRPC_MAX_CONCURRENT_RPCS", "-1"},
		{"GRPC_MAX_CONCURRENT_RPCS", "many"},
		{"GRPC_MAX_CONCURRENT_RPCS", "2.5"},
		{"GRPC_MAX_CONCURRENT_RPCS", "99999999999"},
		{"MESH_METRICS_ADDRESS", "9463"},
		{"MESH_METRICS_ADDRESS", ":9463"},
		{"MESH_METRICS_ADDRESS", "0.0.0.0:65536"},
		{"MESH_METRICS_ADDRESS", "http://0.0.0.0:9463/metrics"},
		{"MESH_HEALTH_PROBE_ADDRESS", "8086"},
		{"MESH_HEALTH_PROBE_ADDRESS", "0.0.0.0"},
		{"MESH_HEALTH_PROBE_ADDRESS", ":8086"},
		{"MESH_HEALTH_PROBE_ADDRESS", "0.0.0.0:http"},
		{"MESH_HEALTH_PROBE_ADDRESS", "0.0.0.0:65536"},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			_, err := FromEnv(lookup(map[string]string{c.name: c.value}))
			var cfgErr *Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("got %v, want a config error", err)
			}
			if cfgErr.Variable != c.name || !strings.HasPrefix(err.Error(), c.name+" ") {
				t.Errorf("error %q does not name %s", err, c.name)
			}
		})
	}
}

func TestMetricsFaultsFileAndHealthProbeAreOffWhenBlank(t *testing.T) {
	cfg, err := FromEnv(lookup(map[string]string{"MESH_METRICS_ADDRESS": " ", "MESH_FAULTS_FILE": "",
		"MESH_HEALTH_PROBE_ADDRESS": "  ", "MESH_MTLS": "off"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsAddr != "" || cfg.FaultsFile != "" || cfg.HealthProbeAddr != "" {
		t.Errorf("got %+v", cfg)
	}
}

func TestABadHealthProbeAddressSaysWhatItWants(t *testing.T) {
	_, err := FromEnv(lookup(map[string]string{"MESH_HEALTH_PROBE_ADDRESS": "0.0.0.0:probe", "MESH_MTLS": "off"}))
	if err == nil || err.Error() != `MESH_HEALTH_PROBE_ADDRESS must be host:port, got "0.0.0.0:probe"` {
		t.Errorf("got %v", err)
	}
}

func TestTracesExporter(t *testing.T) {
	for value, want := range map[string]string{
		"otlp": "otlp", " OTLP ": "otlp", "none": "none", "NONE": "none",
	} {
		cfg, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "off", "OTEL_TRACES_EXPORTER": value}))
		if err != nil || cfg.TracesExporter != want {
			t.Errorf("OTEL_TRACES_EXPORTER=%q: got %q, %v; want %q", value, cfg.TracesExporter, err, want)
		}
	}
	// The Python services' message, their lower-cased value in quotes included.
	_, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "off", "OTEL_TRACES_EXPORTER": " Zipkin "}))
	if err == nil || err.Error() != "OTEL_TRACES_EXPORTER must be one of otlp, none, got 'zipkin'" {
		t.Errorf("got %v", err)
	}
}

func TestConcurrencyLimitZeroIsOff(t *testing.T) {
	cfg, err := FromEnv(lookup(map[string]string{"GRPC_MAX_CONCURRENT_RPCS": "0", "MESH_MTLS": "off"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConcurrentRPCs != 0 {
		t.Errorf("got %d, want 0 (no limit)", cfg.MaxConcurrentRPCs)
	}
}

func TestMTLSFlag(t *testing.T) {
	dir := certsDir(t, "inventory")
	for value, want := range map[string]bool{
		"on": true, "ON": true, "true": true, "Yes": true, "1": true,
		"off": false, "Off": false, "false": false, "no": false, "0": false, " ": MTLSDefault,
	} {
		cfg, err := FromEnv(lookup(map[string]string{"MESH_MTLS": value, "MESH_CERTS_DIR": dir}))
		if err != nil || cfg.MTLS != want {
			t.Errorf("MESH_MTLS=%q: got %v, %v; want %v", value, cfg.MTLS, err, want)
		}
	}
	_, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "maybe"}))
	if err == nil || err.Error() != `MESH_MTLS must be on or off (or true/false, yes/no, 1/0), got "maybe"` {
		t.Errorf("got %v", err)
	}
}

func TestServiceIdentity(t *testing.T) {
	for value, want := range map[string]string{
		"": "inventory", "orders": "orders", "spiffe://shop.local/payments": "payments",
	} {
		cfg, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "off", "MESH_SERVICE_IDENTITY": value}))
		if err != nil || cfg.Service != want {
			t.Errorf("MESH_SERVICE_IDENTITY=%q: got %q, %v; want %q", value, cfg.Service, err, want)
		}
	}
	_, err := FromEnv(lookup(map[string]string{"MESH_SERVICE_IDENTITY": "warehouse"}))
	want := `MESH_SERVICE_IDENTITY must be one of gateway, catalog, orders, inventory, payments, ` +
		`notifications (or its spiffe://shop.local/ identity), got "warehouse"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v", err)
	}
}

func TestMTLSNeedsTheCertificates(t *testing.T) {
	dir := certsDir(t, "inventory")
	if cfg, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": dir})); err != nil || !cfg.MTLS {
		t.Fatalf("got %+v, %v", cfg, err)
	}
	// Off, nothing is looked at.
	empty := t.TempDir()
	if _, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "off", "MESH_CERTS_DIR": empty})); err != nil {
		t.Errorf("off: %v", err)
	}
	for _, file := range []string{"ca.pem", "inventory.pem", "inventory.key"} {
		t.Run(file, func(t *testing.T) {
			dir := certsDir(t, "inventory")
			if err := os.Remove(filepath.Join(dir, file)); err != nil {
				t.Fatal(err)
			}
			_, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": dir}))
			want := "MESH_MTLS is on but " + filepath.Join(dir, file) + " is missing (MESH_CERTS_DIR=" +
				dir + "; `make certs` makes it)"
			var cfgErr *Error
			if !errors.As(err, &cfgErr) || cfgErr.Variable != "MESH_MTLS" || err.Error() != want {
				t.Errorf("got %v, want %s", err, want)
			}
		})
	}
	// Another service's files do not do.
	_, err := FromEnv(lookup(map[string]string{
		"MESH_MTLS": "on", "MESH_CERTS_DIR": dir, "MESH_SERVICE_IDENTITY": "orders"}))
	if err == nil || !strings.Contains(err.Error(), "orders.pem is missing") {
		t.Errorf("got %v", err)
	}
}

func TestDefaultFolders(t *testing.T) {
	cfg, err := FromEnv(lookup(map[string]string{"MESH_MTLS": "off"}))
	if err != nil || cfg.CertsDir != ".run/certs" || cfg.PolicyFile != "mesh/policy.yaml" {
		t.Errorf("got %+v, %v", cfg, err)
	}
}

func TestFirstErrorWins(t *testing.T) {
	_, err := FromEnv(lookup(map[string]string{"GRPC_LISTEN_ADDR": "x", "LOG_LEVEL": "x"}))
	if err == nil || !strings.HasPrefix(err.Error(), "GRPC_LISTEN_ADDR") {
		t.Errorf("got %v", err)
	}
}
