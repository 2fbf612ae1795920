// Package config reads the inventory service's configuration once, at start,
// from environment variables into a Config.
//
// Names and semantics are those of the Python services (mesh/config.py): an
// unset or blank variable takes its default, and a malformed one is an *Error
// naming the variable, so a bad deployment fails at start instead of on the
// first request. OTEL_* variables other than OTEL_SDK_DISABLED and
// OTEL_TRACES_EXPORTER are left to the OpenTelemetry SDK, which reads them
// itself.
package config

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/services/inventory/internal/authz"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls"
)

// MTLSDefault is MESH_MTLS when it is unset: the one place the default
// lives, as MTLS_DEFAULT in mesh/tls.py: on, in all three languages alike.
const MTLSDefault = true

// Service is the shop service this process is unless MESH_SERVICE_IDENTITY
// says otherwise: its certificate's name and its target in the policy.
const Service = "inventory"

// trustDomain is the shop's (mesh/certs.py TRUST_DOMAIN): an identity given
// as a SPIFFE ID must be of it.
const trustDomain = "shop.local"

// Config is everything the process needs to know about its deployment.
type Config struct {
	// ListenAddr is host:port; port 0 picks a free port.
	ListenAddr string
	// DBPath is the bbolt file, created and seeded when missing or empty.
	DBPath string
	// Drain is how long health reports NOT_SERVING before the server stops
	// accepting calls, so load balancers move away first.
	Drain time.Duration
	// Grace is how long calls in flight may take to finish after that.
	Grace time.Duration
	// FaultDelay delays every call of the service's own RPCs.
	FaultDelay time.Duration
	// FaultErrorPercent of those calls then fail with UNAVAILABLE (0..100).
	FaultErrorPercent float64
	LogLevel          slog.Level
	// TracingDisabled is OTEL_SDK_DISABLED=true: no provider, exporter or
	// stats handler at all. The Go SDK does not read that variable itself.
	TracingDisabled bool
	// TracesExporter is OTEL_TRACES_EXPORTER, lower case: "otlp" (the
	// default) or "none", which still makes, samples and propagates spans
	// but exports none. The Go SDK does not read that variable either, and
	// other exporters are not built in, so naming one is an error rather
	// than a silent no-op, as in tracing/provider.py.
	TracesExporter string

	// MTLS is MESH_MTLS: serve mutual TLS only and enforce the policy. When
	// it is on, the three files of CertsDir that Service needs exist.
	MTLS bool
	// CertsDir is MESH_CERTS_DIR, what `make certs` writes (default
	// .run/certs, relative like PolicyFile to the working directory: the
	// repository root in local mode).
	CertsDir string
	// Service is MESH_SERVICE_IDENTITY as a service name (default inventory).
	Service string
	// PolicyFile is MESH_POLICY_FILE (default mesh/policy.yaml), read at
	// start when MTLS is on.
	PolicyFile string

	// MaxConcurrentRPCs is GRPC_MAX_CONCURRENT_RPCS: calls past this many in
	// flight are shed with RESOURCE_EXHAUSTED; 0 is no limit.
	MaxConcurrentRPCs int

	// FaultsFile is MESH_FAULTS_FILE: the fault file, re-read while the
	// server runs, whose rules come before FaultDelay and FaultErrorPercent;
	// "" for none. It need not exist: it is run-time state.
	FaultsFile string
	// MetricsAddr is MESH_METRICS_ADDRESS: host:port of the HTTP listener
	// serving Prometheus text at GET /metrics; "" turns metrics off.
	MetricsAddr string
	// HealthProbeAddr is MESH_HEALTH_PROBE_ADDRESS: host:port of a second,
	// plaintext gRPC listener serving grpc.health.v1.Health alone, for
	// probes that cannot present a certificate (the kubelet's); "" for none.
	HealthProbeAddr string
}

// tracesExporters are the OTEL_TRACES_EXPORTER values tracing can honour,
// the default first (tracing/provider.py TRACES_EXPORTERS).
var tracesExporters = []string{"otlp", "none"}

// MaxConcurrentRPCsDefault is GRPC_MAX_CONCURRENT_RPCS when it is unset, as
// in mesh/server.py and payments' config.ts.
const MaxConcurrentRPCsDefault = 1000

// Error is a missing or malformed variable; the message names it.
type Error struct {
	Variable string
	Problem  string
}

func (e *Error) Error() string { return e.Variable + " " + e.Problem }

// LookupFunc is os.LookupEnv, or a map's lookup in tests.
type LookupFunc func(name string) (string, bool)

// FromEnv reads the configuration; the error, if any, is an *Error.
func FromEnv(lookup LookupFunc) (Config, error) {
	env := reader{lookup: lookup}
	cfg := Config{
		ListenAddr:        env.address("GRPC_LISTEN_ADDR", "0.0.0.0:50053"),
		DBPath:            env.text("INVENTORY_DB_PATH", "inventory.db"),
		Drain:             env.seconds("SHUTDOWN_DRAIN_SECONDS", "0.5"),
		Grace:             env.seconds("SHUTDOWN_GRACE_SECONDS", "10"),
		FaultDelay:        time.Duration(env.integer("FAULT_DELAY_MS", "0", 0, maxDelayMS)) * time.Millisecond,
		FaultErrorPercent: env.number("FAULT_ERROR_PERCENT", "0", 0, 100),
		LogLevel:          env.level("LOG_LEVEL", "INFO"),
		// The specification's kill switch: only "true", in any case, counts.
		TracingDisabled: strings.EqualFold(env.text("OTEL_SDK_DISABLED", "false"), "true"),
		TracesExporter:  env.choice("OTEL_TRACES_EXPORTER", tracesExporters),
		MTLS:            env.flag("MESH_MTLS", MTLSDefault),
		CertsDir:        env.text("MESH_CERTS_DIR", ".run/certs"),
		Service:         env.service("MESH_SERVICE_IDENTITY", Service),
		PolicyFile:      env.text("MESH_POLICY_FILE", "mesh/policy.yaml"),
		MaxConcurrentRPCs: env.integer("GRPC_MAX_CONCURRENT_RPCS",
			strconv.Itoa(MaxConcurrentRPCsDefault), 0, math.MaxInt32),
		FaultsFile:      env.text("MESH_FAULTS_FILE", ""),
		MetricsAddr:     env.optionalAddress("MESH_METRICS_ADDRESS"),
		HealthProbeAddr: env.optionalAddress("MESH_HEALTH_PROBE_ADDRESS"),
	}
	if env.err == nil && cfg.MTLS {
		// Here rather than at the first handshake: a deployment without
		// its certificates fails at start, saying how to make them.
		for _, path := range meshtls.Files(cfg.CertsDir, cfg.Service) {
			if info, err := os.Stat(path); err != nil || !info.Mode().IsRegular() {
				env.fail("MESH_MTLS", "is on but %s is missing (MESH_CERTS_DIR=%s; `make certs` makes it)",
					path, cfg.CertsDir)
				break
			}
		}
	}
	if env.err != nil {
		return Config{}, env.err
	}
	return cfg, nil
}

// reader keeps the first error, so FromEnv reads as a list of fields.
type reader struct {
	lookup LookupFunc
	err    *Error
}

func (r *reader) fail(name, format string, args ...any) {
	if r.err == nil {
		r.err = &Error{Variable: name, Problem: fmt.Sprintf(format, args...)}
	}
}

func (r *reader) text(name, fallback string) string {
	value, _ := r.lookup(name)
	if value = strings.TrimSpace(value); value != "" {
		return value
	}
	return fallback
}

// maxDelayMS is a day: far beyond any demo, and safe to turn into a Duration.
const maxDelayMS = 24 * 3600 * 1000

func (r *reader) integer(name, fallback string, minimum, maximum int) int {
	raw := r.text(name, fallback)
	value, err := strconv.Atoi(raw)
	if err != nil {
		r.fail(name, "must be an integer, got %q", raw)
		return 0
	}
	if value < minimum {
		r.fail(name, "must be at least %d, got %d", minimum, value)
	}
	if value > maximum {
		r.fail(name, "must be at most %d, got %d", maximum, value)
	}
	return value
}

func (r *reader) number(name, fallback string, minimum, maximum float64) float64 {
	raw := r.text(name, fallback)
	value, err := strconv.ParseFloat(raw, 64)
	switch {
	case err != nil:
		r.fail(name, "must be a number, got %q", raw)
	case math.IsNaN(value) || math.IsInf(value, 0):
		r.fail(name, "must be a finite number, got %q", raw)
	case value < minimum:
		r.fail(name, "must be at least %g, got %g", minimum, value)
	case value > maximum:
		r.fail(name, "must be at most %g, got %g", maximum, value)
	}
	return value
}

func (r *reader) seconds(name, fallback string) time.Duration {
	// A week is far beyond any sensible shutdown and keeps the conversion
	// to a Duration from overflowing.
	value := r.number(name, fallback, 0, 7*24*3600)
	return time.Duration(value * float64(time.Second))
}

// optionalAddress is address, or "" when the variable is unset or blank.
func (r *reader) optionalAddress(name string) string {
	if r.text(name, "") == "" {
		return ""
	}
	return r.address(name, "")
}

func (r *reader) address(name, fallback string) string {
	raw := r.text(name, fallback)
	sep := strings.LastIndex(raw, ":")
	// ParseUint takes no sign and no blank: the port is digits only, 0-65535.
	if _, err := strconv.ParseUint(raw[sep+1:], 10, 16); sep <= 0 || err != nil {
		r.fail(name, "must be host:port, got %q", raw)
	}
	return raw
}

// flag is mesh/config.py's flag: on/off, true/false, yes/no or 1/0, in any case.
func (r *reader) flag(name string, fallback bool) bool {
	raw := r.text(name, strconv.FormatBool(fallback))
	switch strings.ToLower(raw) {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	r.fail(name, "must be on or off (or true/false, yes/no, 1/0), got %q", raw)
	return false
}

// service is one of the shop's services, named as such (orders) or by its
// SPIFFE ID (spiffe://shop.local/orders).
func (r *reader) service(name, fallback string) string {
	raw := r.text(name, fallback)
	service := raw
	if strings.HasPrefix(raw, "spiffe://") {
		var ok bool
		if service, ok = strings.CutPrefix(raw, "spiffe://"+trustDomain+"/"); !ok {
			service = "" // another trust domain
		}
	}
	if !authz.IsService(service) {
		r.fail(name, "must be one of %s (or its spiffe://%s/ identity), got %q",
			strings.Join(authz.Services(), ", "), trustDomain, raw)
	}
	return service
}

// choice is one of choices in any case, the first when unset; the message
// quotes the value as Python's repr does, so it reads the same in every
// service.
func (r *reader) choice(name string, choices []string) string {
	value := strings.ToLower(r.text(name, choices[0]))
	if !slices.Contains(choices, value) {
		r.fail(name, "must be one of %s, got '%s'", strings.Join(choices, ", "), value)
	}
	return value
}

func (r *reader) level(name, fallback string) slog.Level {
	raw := r.text(name, fallback)
	switch strings.ToUpper(raw) {
	case "DEBUG":
		return slog.LevelDebug
	case "INFO":
		return slog.LevelInfo
	case "WARN", "WARNING":
		return slog.LevelWarn
	case "ERROR":
		return slog.LevelError
	}
	r.fail(name, "must be DEBUG, INFO, WARNING or ERROR, got %q", raw)
	return slog.LevelInfo
}
