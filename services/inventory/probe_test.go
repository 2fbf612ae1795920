package main

import (
	"net"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
)

// runProbe runs `inventory probe` against addr's port with env (as the
// image sets GRPC_LISTEN_ADDR: all addresses, the server's port) and
// returns its exit status and stderr.
func runProbe(t *testing.T, addr string, env map[string]string) (int, string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	full := map[string]string{"GRPC_LISTEN_ADDR": "0.0.0.0:" + port}
	for name, value := range env {
		full[name] = value
	}
	var stderr strings.Builder
	code := probe(nil, func(name string) (string, bool) { v, ok := full[name]; return v, ok }, &stderr)
	return code, stderr.String()
}

// plaintextServer is the inventory serving without mTLS.
func plaintextServer(t *testing.T) string {
	return serveWith(t, config.Config{Service: "inventory"}, tracetest.NewSpanRecorder())
}

func TestProbeOverMTLS(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	s := serveSecured(t)
	// MESH_MTLS is left to its default, as in the image: on.
	if code, stderr := runProbe(t, s.addr, map[string]string{"MESH_CERTS_DIR": s.dir}); code != 0 || stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0", code, stderr)
	}
}

func TestProbeRefusesAServerOfAnotherIdentity(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	dir := t.TempDir()
	meshtlstest.WriteDir(t, dir, "inventory", "catalog")
	addr := serveWith(t, config.Config{MTLS: true, CertsDir: dir, Service: "catalog", PolicyFile: shopPolicy},
		tracetest.NewSpanRecorder())
	code, stderr := runProbe(t, addr, map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": dir})
	if code != 1 || !strings.Contains(stderr, "is not healthy: ") || !strings.Contains(stderr, "inventory") ||
		strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q; want 1 and one line", code, stderr)
	}
	// The same server is healthy to a probe that is catalog: the probe
	// follows MESH_SERVICE_IDENTITY.
	code, stderr = runProbe(t, addr, map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": dir,
		"MESH_SERVICE_IDENTITY": "spiffe://shop.local/catalog"})
	if code != 0 {
		t.Errorf("as catalog: exit %d, stderr %q; want 0", code, stderr)
	}
}

func TestProbePlaintext(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	addr := plaintextServer(t)
	if code, stderr := runProbe(t, addr, map[string]string{"MESH_MTLS": "off"}); code != 0 || stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0", code, stderr)
	}
}

func TestProbeWithMTLSOnAgainstAPlaintextServer(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	addr := plaintextServer(t)
	dir := t.TempDir()
	meshtlstest.WriteDir(t, dir, "inventory")
	code, stderr := runProbe(t, addr, map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": dir})
	if code != 1 || !strings.Contains(stderr, "is not healthy: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q; want 1 and one line", code, stderr)
	}
}

func TestProbeNotServing(t *testing.T) {
	// A bare health service that says NOT_SERVING (the inventory does so
	// while it drains).
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthServer := grpchealth.NewServer()
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, healthServer)
	go func() { _ = srv.Serve(listener) }()
	t.Cleanup(srv.Stop)
	code, stderr := runProbe(t, listener.Addr().String(), map[string]string{"MESH_MTLS": "off"})
	if code != 1 || !strings.HasSuffix(stderr, "is not healthy: it reports NOT_SERVING\n") {
		t.Errorf("exit %d, stderr %q; want 1", code, stderr)
	}
}

func TestProbeConfigurationErrorsExitTwo(t *testing.T) {
	empty := t.TempDir()
	cases := []struct {
		name string
		env  map[string]string
		want string // stderr's one line, or its start
	}{
		{"bad flag", map[string]string{"MESH_MTLS": "maybe"},
			`configuration error: MESH_MTLS must be on or off (or true/false, yes/no, 1/0), got "maybe"` + "\n"},
		{"missing certificates", map[string]string{"MESH_CERTS_DIR": empty},
			"configuration error: MESH_MTLS is on but "},
		{"port 0", map[string]string{"MESH_MTLS": "off", "GRPC_LISTEN_ADDR": "0.0.0.0:0"},
			`configuration error: GRPC_LISTEN_ADDR has port 0: nothing to probe, got "0.0.0.0:0"` + "\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stderr := runProbe(t, "127.0.0.1:50053", c.env) // nothing is dialled
			if code != 2 || !strings.HasPrefix(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 2, %q", code, stderr, c.want)
			}
		})
	}
	var stderr strings.Builder
	if code := probe([]string{"127.0.0.1:1"}, func(string) (string, bool) { return "", false }, &stderr); code != 2 {
		t.Errorf("with an argument: exit %d, stderr %q; want 2", code, stderr.String())
	}
}
