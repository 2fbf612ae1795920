package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/server"
	"github.com/shopmesh/shopmesh/services/inventory/internal/stock"
	"github.com/shopmesh/shopmesh/services/inventory/internal/telemetry"
)

// The shop's real policy, from this folder.
const shopPolicy = "../../mesh/policy.yaml"

const reserveStock = "/shop.inventory.v1.InventoryService/ReserveStock"

// secured is the inventory as main wires it with MESH_MTLS on, serving on a
// free loopback port, with its spans recorded.
type secured struct {
	addr  string
	dir   string // its certificates folder
	ca    *meshtlstest.CA
	spans *tracetest.SpanRecorder
}

func serveSecured(t *testing.T) *secured {
	t.Helper()
	s := &secured{dir: t.TempDir(), spans: tracetest.NewSpanRecorder()}
	s.ca = meshtlstest.WriteDir(t, s.dir, "inventory")
	cfg := config.Config{MTLS: true, CertsDir: s.dir, Service: "inventory", PolicyFile: shopPolicy}
	s.addr = serveWith(t, cfg, s.spans)
	return s
}

// serveWith builds the server as run does, from cfg, with a span recorder.
func serveWith(t *testing.T, cfg config.Config, spans *tracetest.SpanRecorder) string {
	t.Helper()
	return serveEndpoints(t, cfg, spans).addr
}

// endpoints are where serveEndpoints serves: the server, and the metrics
// and the health probe when cfg asks for them ("" otherwise).
type endpoints struct{ addr, metrics, probe string }

// serveEndpoints is serveWith that also returns the addresses of the
// metrics and the health probe, on free loopback ports.
func serveEndpoints(t *testing.T, cfg config.Config, spans *tracetest.SpanRecorder) endpoints {
	t.Helper()
	var opts server.Options
	policy, err := secure(cfg, &opts)
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := startMetrics(t.Context(), cfg, policy, &opts)
	if err != nil {
		t.Fatal(err)
	}
	var served endpoints
	if metrics != nil {
		served.metrics = metrics.Addr()
	}
	// Registered first, so it runs after the server has stopped.
	t.Cleanup(func() {
		if err := metrics.Shutdown(); err != nil {
			t.Errorf("metrics shutdown: %v", err)
		}
	})
	opts.StatsHandler = telemetry.ServerHandler(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	store, err := stock.Open(filepath.Join(t.TempDir(), "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenAddr = "127.0.0.1:0"
	listener, probe, err := listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served.addr = listener.Addr().String()
	if probe != nil {
		served.probe = probe.Addr().String()
	}
	opts.HealthProbe = probe
	srv := server.New(listener, store, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Shutdown(0, time.Second)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = store.Close()
	})
	return served
}

// dial is a new connection presenting client (none when nil) and checking
// that the server is the inventory of the shop's CA.
func (s *secured) dial(t *testing.T, client *meshtlstest.Issued) *grpc.ClientConn {
	t.Helper()
	config := &tls.Config{RootCAs: s.ca.Pool(), ServerName: "inventory"}
	if client != nil {
		config.Certificates = []tls.Certificate{client.TLS()}
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// reserve reserves one chemex for a new order and reports the serial of the
// server's certificate on the connection it used.
func reserve(t *testing.T, conn *grpc.ClientConn, md ...string) (*big.Int, error) {
	t.Helper()
	var p peer.Peer
	ctx := metadata.AppendToOutgoingContext(callCtx(t), md...)
	_, err := pb.NewInventoryServiceClient(conn).ReserveStock(ctx, &pb.ReserveStockRequest{
		OrderId: "o-" + t.Name() + time.Now().Format(time.RFC3339Nano),
		Lines:   []*pb.ReservationLine{{ProductId: "prod-chemex", Quantity: 1}},
	}, grpc.Peer(&p))
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
		return info.State.PeerCertificates[0].SerialNumber, err
	}
	return nil, err
}

func health(t *testing.T, conn *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(conn).Check(callCtx(t), &healthpb.HealthCheckRequest{})
	return err
}

func TestMTLSRefusesBadCertificatesAtTheHandshake(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	s := serveSecured(t)
	cases := map[string]*meshtlstest.Issued{
		"no certificate": nil,
		"another CA":     meshtlstest.NewCA(t).Issue(t, "orders"),
		"expired":        s.ca.IssueFor(t, "orders", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)),
	}
	for name, client := range cases {
		t.Run(name, func(t *testing.T) {
			conn := s.dial(t, client)
			if _, err := reserve(t, conn); status.Code(err) != codes.Unavailable {
				t.Errorf("reserve: got %v, want UNAVAILABLE", err)
			}
			if err := health(t, conn); status.Code(err) != codes.Unavailable {
				t.Errorf("health: got %v, want UNAVAILABLE", err)
			}
		})
	}
	// A plaintext client gets nowhere either.
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := health(t, conn); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext: got %v, want UNAVAILABLE", err)
	}
}

func TestMTLSEnforcesThePolicy(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	s := serveSecured(t)
	orders := s.dial(t, s.ca.Issue(t, "orders"))
	gateway := s.dial(t, s.ca.Issue(t, "gateway"))
	catalog := s.dial(t, s.ca.Issue(t, "catalog"))

	if _, err := reserve(t, orders); err != nil {
		t.Errorf("orders reserving: %v", err)
	}
	denied := func(what string, err error, want string) {
		t.Helper()
		if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != want {
			t.Errorf("%s: got %v, want PERMISSION_DENIED %q", what, err, want)
		}
	}
	_, err := reserve(t, gateway)
	denied("gateway reserving", err, "caller spiffe://shop.local/gateway may not call "+reserveStock)
	_, err = pb.NewInventoryServiceClient(orders).GetStock(callCtx(t),
		&pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	denied("orders reading stock", err,
		"caller spiffe://shop.local/orders may not call /shop.inventory.v1.InventoryService/GetStock")
	_, err = reserve(t, orders, "x-shop-subject", "cust-1")
	denied("orders vouching", err, "caller spiffe://shop.local/orders may not send x-shop-subject "+
		"(only spiffe://shop.local/gateway may) calling "+reserveStock)

	// Streams are guarded too: reflection is not in the policy.
	stream, err := reflectionpb.NewServerReflectionClient(orders).ServerReflectionInfo(callCtx(t))
	if err == nil {
		err = stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		if err == nil || errors.Is(err, io.EOF) {
			_, err = stream.Recv()
		}
	}
	denied("orders reflecting", err, "caller spiffe://shop.local/orders may not call "+
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")

	// Health is open to every valid certificate, with the header or not,
	// unary or streamed.
	for name, conn := range map[string]*grpc.ClientConn{"orders": orders, "gateway": gateway, "catalog": catalog} {
		if err := health(t, conn); err != nil {
			t.Errorf("%s checking health: %v", name, err)
		}
		ctx := metadata.AppendToOutgoingContext(callCtx(t), "x-shop-subject", "cust-1")
		watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = watch.Recv()
		}
		if err != nil {
			t.Errorf("%s watching health: %v", name, err)
		}
	}
}

func TestADenialMarksItsServerSpan(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	s := serveSecured(t)
	_, err := reserve(t, s.dial(t, s.ca.Issue(t, "catalog")))
	want := "caller spiffe://shop.local/catalog may not call " + reserveStock
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.spans.Ended()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the server ends its span after the client has its answer
	}
	spans := s.spans.Ended()
	if len(spans) != 1 || spans[0].Name() != strings.TrimPrefix(reserveStock, "/") {
		t.Fatalf("spans %v", spans)
	}
	attrs := attribute.NewSet(spans[0].Attributes()...)
	if v, _ := attrs.Value("mesh.authz.denied"); !v.AsBool() {
		t.Errorf("mesh.authz.denied = %v", v.Emit())
	}
	if v, _ := attrs.Value("mesh.authz.caller"); v.AsString() != "spiffe://shop.local/catalog" {
		t.Errorf("mesh.authz.caller = %q", v.Emit())
	}
	if st := spans[0].Status(); st.Code != otelcodes.Error || st.Description != want {
		t.Errorf("status %v", st)
	}
}

func TestMTLSPicksUpARotatedCertificate(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	s := serveSecured(t)
	orders := s.ca.Issue(t, "orders")
	old := s.dial(t, orders)
	first, err := reserve(t, old)
	if err != nil {
		t.Fatal(err)
	}

	// As `make certs ROTATE=1` does it: the key, then the certificate.
	next := s.ca.Issue(t, "inventory")
	next.Write(t, s.dir, "inventory")
	got, err := reserve(t, s.dial(t, orders))
	if err != nil || got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("a new connection: serial %v, %v; want %v", got, err, next.Cert.SerialNumber)
	}
	// The connection open before is untouched.
	if got, err := reserve(t, old); err != nil || got.Cmp(first) != 0 {
		t.Errorf("the old connection: serial %v, %v; want %v", got, err, first)
	}

	// A key without its certificate (or a corrupt certificate) is not
	// taken: new connections keep getting the current certificate.
	meshtlstest.WriteFile(t, meshtls.KeyFile(s.dir, "inventory"), s.ca.Issue(t, "inventory").KeyPEM(t))
	got, err = reserve(t, s.dial(t, orders))
	if err != nil || got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("a half-rotated pair: serial %v, %v; want %v", got, err, next.Cert.SerialNumber)
	}
	meshtlstest.WriteFile(t, meshtls.CertFile(s.dir, "inventory"), []byte("corrupt"))
	got, err = reserve(t, s.dial(t, orders))
	if err != nil || got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("a corrupt certificate: serial %v, %v; want %v", got, err, next.Cert.SerialNumber)
	}
}

func TestWithMTLSOffNothingIsAuthorized(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	addr := serveWith(t, config.Config{MTLS: false, CertsDir: t.TempDir(), Service: "inventory",
		PolicyFile: "/nonexistent"}, tracetest.NewSpanRecorder())
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// GetStock is no one's under the policy; here, anyone's.
	if _, err := pb.NewInventoryServiceClient(conn).GetStock(callCtx(t),
		&pb.GetStockRequest{ProductIds: []string{"prod-chemex"}}); err != nil {
		t.Errorf("plaintext GetStock: %v", err)
	}
}

// The kubelet's grpc probe: no certificate, plaintext, health only.
func TestHealthProbeIsPlaintextBesideMTLS(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	dir := t.TempDir()
	ca := meshtlstest.WriteDir(t, dir, "inventory")
	served := serveEndpoints(t, config.Config{MTLS: true, CertsDir: dir, Service: "inventory",
		PolicyFile: shopPolicy, HealthProbeAddr: "127.0.0.1:0"}, tracetest.NewSpanRecorder())
	probe, err := grpc.NewClient(served.probe, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	res, err := healthpb.NewHealthClient(probe).Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("probe: %v, %v; want SERVING", res.GetStatus(), err)
	}
	// Health alone is registered there: a business call finds no service.
	if _, err := reserve(t, probe); status.Code(err) != codes.Unimplemented {
		t.Errorf("reserve on the probe port: got %v, want UNIMPLEMENTED", err)
	}
	// The server's own port still takes mTLS only.
	s := &secured{addr: served.addr, dir: dir, ca: ca}
	if _, err := reserve(t, s.dial(t, ca.Issue(t, "orders"))); err != nil {
		t.Errorf("reserve over mTLS: %v", err)
	}
	if err := health(t, s.dial(t, nil)); status.Code(err) != codes.Unavailable {
		t.Errorf("no certificate on the server's port: got %v, want UNAVAILABLE", err)
	}
}

func TestMeshConfigurationErrorsExitTwo(t *testing.T) {
	good := t.TempDir()
	meshtlstest.WriteDir(t, good, "inventory")
	empty := t.TempDir()
	badPolicy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(badPolicy, []byte("version: 1\ntrust_domain: shop.local\nservices:\n  warehouse: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mismatched := t.TempDir()
	ca := meshtlstest.WriteDir(t, mismatched, "inventory")
	meshtlstest.WriteFile(t, meshtls.KeyFile(mismatched, "inventory"), ca.Issue(t, "inventory").KeyPEM(t))
	cases := []struct {
		name string
		env  map[string]string
		want string // the start of stderr's one line
	}{
		{"bad flag", map[string]string{"MESH_MTLS": "maybe"},
			`configuration error: MESH_MTLS must be on or off (or true/false, yes/no, 1/0), got "maybe"`},
		{"bad identity", map[string]string{"MESH_SERVICE_IDENTITY": "spiffe://elsewhere/inventory"},
			"configuration error: MESH_SERVICE_IDENTITY must be one of "},
		{"missing certificates", map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": empty},
			"configuration error: MESH_MTLS is on but " + filepath.Join(empty, "ca.pem") + " is missing (MESH_CERTS_DIR=" +
				empty + "; `make certs` makes it)"},
		{"bad policy", map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": good, "MESH_POLICY_FILE": badPolicy},
			"configuration error: " + badPolicy + ":4: services.warehouse: "},
		{"missing policy", map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": good, "MESH_POLICY_FILE": empty + "/none.yaml"},
			"configuration error: " + empty + "/none.yaml:0: (file): cannot read: "},
		{"mismatched pair", map[string]string{"MESH_MTLS": "on", "MESH_CERTS_DIR": mismatched, "MESH_POLICY_FILE": shopPolicy},
			"configuration error: MESH_MTLS is on but the certificate is unusable: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			meshtlstest.CaptureLogs(t)
			t.Setenv("OTEL_SDK_DISABLED", "true")
			for name, value := range c.env {
				t.Setenv(name, value)
			}
			code, stderr := runWithStderr(t)
			if code != 2 || !strings.HasPrefix(stderr, c.want) || !strings.HasSuffix(stderr, "\n") {
				t.Errorf("exit %d, stderr %q; want 2, %q...", code, stderr, c.want)
			}
		})
	}
}
