package authz_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/authz"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
)

// stockServer answers the two methods the tests call.
type stockServer struct {
	pb.UnimplementedInventoryServiceServer
}

func (stockServer) GetStock(context.Context, *pb.GetStockRequest) (*pb.GetStockResponse, error) {
	return &pb.GetStockResponse{}, nil
}

func (stockServer) ReserveStock(context.Context, *pb.ReserveStockRequest) (*pb.ReserveStockResponse, error) {
	return &pb.ReserveStockResponse{}, nil
}

// serve starts an inventory-shaped server on 127.0.0.1 with the shop's
// policy: TLS with the CA's client certificates optional (so that a client
// without one reaches the interceptor), health and reflection registered.
func serve(t *testing.T, ca *meshtlstest.CA) string {
	t.Helper()
	policy := loadShop(t)
	config := &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, "inventory").TLS()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS13,
	}
	server := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(config)),
		grpc.ChainUnaryInterceptor(authz.UnaryServerInterceptor(policy, "inventory")),
		grpc.ChainStreamInterceptor(authz.StreamServerInterceptor(policy, "inventory")),
	)
	pb.RegisterInventoryServiceServer(server, stockServer{})
	healthpb.RegisterHealthServer(server, health.NewServer())
	reflection.Register(server)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = server.Serve(listener)
	}()
	t.Cleanup(func() {
		server.Stop()
		<-done
	})
	return listener.Addr().String()
}

// dial connects with the client certificate, if any, trusting roots.
func dial(t *testing.T, addr string, roots *x509.CertPool, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	config := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		config.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func call(conn *grpc.ClientConn, method string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := pb.NewInventoryServiceClient(conn)
	var err error
	switch method {
	case "GetStock":
		_, err = client.GetStock(ctx, &pb.GetStockRequest{ProductIds: []string{"p"}})
	case "ReserveStock":
		_, err = client.ReserveStock(ctx, &pb.ReserveStockRequest{OrderId: "o"})
	case "Check":
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	case "Watch": // a server stream: the interceptor runs before the first message
		var stream grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
		if stream, err = healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{}); err == nil {
			_, err = stream.Recv()
		}
	case "Reflection": // a bidirectional stream
		var stream grpc.BidiStreamingClient[reflectionpb.ServerReflectionRequest, reflectionpb.ServerReflectionResponse]
		stream, err = reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err == nil {
			// Send says io.EOF when the server has already ended the
			// call; Recv has its status either way.
			err = stream.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
			})
			if err == nil || errors.Is(err, io.EOF) {
				_, err = stream.Recv()
			}
		}
	default:
		panic(method)
	}
	return err
}

func TestTheInterceptorsEnforceThePolicyOverMTLS(t *testing.T) {
	logs := meshtlstest.CaptureLogs(t)
	ca := meshtlstest.NewCA(t)
	addr := serve(t, ca)
	orders := ca.Issue(t, "orders").TLS()
	gateway := ca.Issue(t, "gateway").TLS()
	foreign := ca.Issue(t, "orders", meshtlstest.WithURIs("spiffe://other.domain/orders")).TLS()
	twice := ca.Issue(t, "orders", meshtlstest.WithURIs("spiffe://shop.local/orders", "spiffe://shop.local/gateway")).TLS()
	web := ca.Issue(t, "orders", meshtlstest.WithURIs("https://shop.local/orders")).TLS()
	anonymous := "no identity"
	const inv = "/shop.inventory.v1.InventoryService/"
	const reflect = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	cases := []struct {
		name   string
		cert   *tls.Certificate
		method string
		denied string // the caller the denial names; "" when allowed
	}{
		{"orders reserves", &orders, "ReserveStock", ""},
		{"orders reads stock", &orders, "GetStock", "spiffe://shop.local/orders"},
		{"orders checks health", &orders, "Check", ""},
		{"orders reflects", &orders, "Reflection", "spiffe://shop.local/orders"},
		{"gateway reads stock", &gateway, "GetStock", "spiffe://shop.local/gateway"},
		{"gateway reserves", &gateway, "ReserveStock", "spiffe://shop.local/gateway"},
		{"gateway watches health", &gateway, "Watch", ""},
		{"another trust domain", &foreign, "ReserveStock", "spiffe://other.domain/orders"},
		{"two SPIFFE IDs", &twice, "ReserveStock", anonymous},
		{"no SPIFFE ID", &web, "ReserveStock", anonymous},
		{"no certificate", nil, "ReserveStock", anonymous},
		{"no certificate reflects", nil, "Reflection", anonymous},
		{"no certificate checks health", nil, "Check", ""},
		{"no certificate watches health", nil, "Watch", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := call(dial(t, addr, ca.Pool(), c.cert), c.method)
			if c.denied == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			method := inv + c.method
			if c.method == "Reflection" {
				method = reflect
			}
			want := "caller " + c.denied + " may not call " + method
			if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != want {
				t.Fatalf("got %v, want PERMISSION_DENIED %q", err, want)
			}
			if !strings.Contains(logs.String(), `"msg":"permission denied: `+want+`"`) {
				t.Errorf("no log line for %q in\n%s", want, logs)
			}
		})
	}
	// One line per denial, with the fields a log query needs.
	var denials int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var record map[string]any
		if err := json.Unmarshal([]byte(line), &record); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if record["level"] != "WARN" || record["caller"] == nil || record["method"] == nil ||
			record["target"] != "inventory" {
			t.Errorf("log line %q", line)
		}
		denials++
	}
	if denials != 9 {
		t.Errorf("%d log lines, want 9:\n%s", denials, logs)
	}
}

func TestACertificateFromAnotherCAIsRefusedAtTheHandshake(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	ca := meshtlstest.NewCA(t)
	addr := serve(t, ca)
	rogue := meshtlstest.NewCA(t).Issue(t, "orders").TLS()
	err := call(dial(t, addr, ca.Pool(), &rogue), "ReserveStock")
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
}

func TestWithoutTLSOnlyHealthIsOpen(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	policy := loadShop(t)
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	server := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(provider))),
		grpc.ChainUnaryInterceptor(authz.UnaryServerInterceptor(policy, "inventory")),
		grpc.ChainStreamInterceptor(authz.StreamServerInterceptor(policy, "inventory")),
	)
	pb.RegisterInventoryServiceServer(server, stockServer{})
	healthpb.RegisterHealthServer(server, health.NewServer())
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = server.Serve(listener) }()
	defer server.Stop()
	conn, err := grpc.NewClient(listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if err := call(conn, "Check"); err != nil {
		t.Errorf("health refused: %v", err)
	}
	if err := call(conn, "Watch"); err != nil {
		t.Errorf("health watch refused: %v", err)
	}
	want := "caller no identity may not call /shop.inventory.v1.InventoryService/ReserveStock"
	if s := status.Convert(call(conn, "ReserveStock")); s.Code() != codes.PermissionDenied || s.Message() != want {
		t.Errorf("got %v, want %q", s, want)
	}
	// The server span, as otelgrpc ends it, still says why.
	server.Stop()
	var marked int
	for _, span := range recorder.Ended() {
		if span.Name() == "shop.inventory.v1.InventoryService/ReserveStock" {
			if span.Status().Code != otelcodes.Error || span.Status().Description != want {
				t.Errorf("server span status %v", span.Status())
			}
			marked++
		} else if span.Status().Code == otelcodes.Error {
			t.Errorf("span %s marked %v", span.Name(), span.Status())
		}
	}
	if marked != 1 {
		t.Errorf("%d ReserveStock server spans", marked)
	}
}

func TestADenialMarksTheServerSpan(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	ctx, span := provider.Tracer("test").Start(context.Background(), "shop.inventory.v1.InventoryService/GetStock")
	interceptor := authz.UnaryServerInterceptor(loadShop(t), "inventory")
	info := &grpc.UnaryServerInfo{FullMethod: "/shop.inventory.v1.InventoryService/GetStock"}
	_, err := interceptor(ctx, nil, info, func(context.Context, any) (any, error) {
		t.Error("the handler ran")
		return nil, nil
	})
	span.End()
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v", err)
	}
	ended := recorder.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans", len(ended))
	}
	attrs := map[string]string{}
	for _, kv := range ended[0].Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["mesh.authz.denied"] != "true" || attrs["mesh.authz.caller"] != "" {
		t.Errorf("attributes %v", attrs)
	}
	want := "caller no identity may not call /shop.inventory.v1.InventoryService/GetStock"
	if got := ended[0].Status(); got.Code != otelcodes.Error || got.Description != want {
		t.Errorf("status %v", got)
	}
}

func TestPeerIdentity(t *testing.T) {
	ca := meshtlstest.NewCA(t)
	leaf := func(uris ...string) *x509.Certificate {
		return ca.Issue(t, "orders", meshtlstest.WithURIs(uris...)).Cert
	}
	verified := func(cert *x509.Certificate) credentials.TLSInfo {
		return credentials.TLSInfo{State: tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{cert},
			VerifiedChains:   [][]*x509.Certificate{{cert, ca.Cert}},
		}}
	}
	orders := leaf("spiffe://shop.local/orders")
	unverified := verified(orders)
	unverified.State.VerifiedChains = nil
	pointer := verified(orders)
	cases := []struct {
		name     string
		auth     credentials.AuthInfo
		identity string
	}{
		{"one SPIFFE ID", verified(orders), "spiffe://shop.local/orders"},
		{"a pointer to TLSInfo", &pointer, "spiffe://shop.local/orders"},
		{"beside another URI", verified(leaf("https://shop.local/x", "spiffe://shop.local/orders")), "spiffe://shop.local/orders"},
		{"upper-case scheme", verified(leaf("SPIFFE://shop.local/orders")), ""},
		{"beside an upper-case one", verified(leaf("SPIFFE://shop.local/gateway", "spiffe://shop.local/orders")),
			"spiffe://shop.local/orders"},
		{"another trust domain", verified(leaf("spiffe://other.domain/orders")), "spiffe://other.domain/orders"},
		{"two SPIFFE IDs", verified(leaf("spiffe://shop.local/orders", "spiffe://shop.local/orders")), ""},
		{"no URI", verified(leaf()), ""},
		{"not verified", unverified, ""},
		{"no certificate", credentials.TLSInfo{}, ""},
		{"not TLS", insecureInfo{}, ""},
		{"no auth info", nil, ""},
	}
	for _, c := range cases {
		ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: c.auth})
		identity, ok := authz.PeerIdentity(ctx)
		if identity != c.identity || ok != (c.identity != "") {
			t.Errorf("%s: got %q, %v; want %q", c.name, identity, ok, c.identity)
		}
	}
	if identity, ok := authz.PeerIdentity(context.Background()); ok || identity != "" {
		t.Errorf("no peer: got %q, %v", identity, ok)
	}
}

type insecureInfo struct{}

func (insecureInfo) AuthType() string { return "insecure" }

func TestInterceptorsRefuseAnUnknownService(t *testing.T) {
	policy := loadShop(t)
	for _, build := range []func(){
		func() { authz.UnaryServerInterceptor(policy, "catalogue") },
		func() { authz.StreamServerInterceptor(policy, "catalogue") },
		func() { authz.UnaryServerInterceptor(nil, "inventory") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			build()
		}()
	}
}

func TestDenialOfTheSubjectHeader(t *testing.T) {
	// The shop's policy lets no gateway call inventory; this one does.
	policy, err := authz.Parse([]byte(`version: 1
trust_domain: shop.local
services:
  inventory:
    - callers: [gateway, orders]
      methods: ["shop.inventory.v1.InventoryService/*"]
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	const reserve = "/shop.inventory.v1.InventoryService/ReserveStock"
	const check = "/grpc.health.v1.Health/Check"
	subject := metadata.Pairs(authz.SubjectHeader, "cust-1")
	other := metadata.Pairs("x-shop-other", "1")
	cases := []struct {
		name     string
		identity string
		method   string
		md       metadata.MD
		want     string
	}{
		{"gateway vouches", spiffe("gateway"), reserve, subject, ""},
		{"gateway without it", spiffe("gateway"), reserve, nil, ""},
		{"orders without it", spiffe("orders"), reserve, other, ""},
		{"orders vouches", spiffe("orders"), reserve, subject,
			"caller spiffe://shop.local/orders may not send x-shop-subject " +
				"(only spiffe://shop.local/gateway may) calling " + reserve},
		{"an empty value is still sent", spiffe("orders"), reserve, metadata.Pairs(authz.SubjectHeader, ""),
			"caller spiffe://shop.local/orders may not send x-shop-subject " +
				"(only spiffe://shop.local/gateway may) calling " + reserve},
		{"the policy speaks first", "", reserve, subject,
			"caller no identity may not call " + reserve},
		{"health is open with it", "", check, subject, ""},
		{"health is open to orders with it", spiffe("orders"), check, subject, ""},
	}
	for _, c := range cases {
		if got := authz.Denial(policy, "inventory", c.identity, c.method, c.md); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestTheSubjectHeaderFromOrdersIsDeniedOverMTLS(t *testing.T) {
	logs := meshtlstest.CaptureLogs(t)
	ca := meshtlstest.NewCA(t)
	addr := serve(t, ca)
	orders := ca.Issue(t, "orders").TLS()
	conn := dial(t, addr, ca.Pool(), &orders)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, authz.SubjectHeader, "cust-1")
	_, err := pb.NewInventoryServiceClient(conn).ReserveStock(ctx, &pb.ReserveStockRequest{OrderId: "o"})
	want := "caller spiffe://shop.local/orders may not send x-shop-subject " +
		"(only spiffe://shop.local/gateway may) calling /shop.inventory.v1.InventoryService/ReserveStock"
	if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != want {
		t.Fatalf("got %v, want PERMISSION_DENIED %q", err, want)
	}
	if !strings.Contains(logs.String(), `"caller":"spiffe://shop.local/orders"`) {
		t.Errorf("log %s", logs)
	}
	// Health stays open, header or not.
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health: %v", err)
	}
}

func TestCallerIsUnknownWithoutAVerifiedShopIdentity(t *testing.T) {
	policy := loadShop(t)
	plain := peer.NewContext(t.Context(), &peer.Peer{AuthInfo: insecureInfo{}})
	for name, c := range map[string]struct {
		ctx    context.Context
		policy *authz.Policy
	}{
		"mTLS off":  {t.Context(), nil},
		"no peer":   {t.Context(), policy},
		"plaintext": {plain, policy},
	} {
		if got := authz.Caller(c.ctx, c.policy); got != authz.UnknownCaller {
			t.Errorf("%s: %q, want %q", name, got, authz.UnknownCaller)
		}
	}
}
