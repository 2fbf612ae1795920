package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls"
)

// probeTimeout bounds the whole check, as mesh/probe.py's timeout_s does.
const probeTimeout = 2 * time.Second

// probe is `/inventory probe`, the image's healthcheck: the image is
// distroless (no shell) and carries no grpc_health_probe, so the binary asks
// itself. Like `python -m mesh.probe` it runs beside the server with the
// server's environment and calls grpc.health.v1.Health/Check (service "") on
// 127.0.0.1 at GRPC_LISTEN_ADDR's port: over mTLS as the service itself,
// expecting the server to be that service, when MESH_MTLS is on (health is
// open to every identity); plaintext when it is off.
//
// Exit status 0 is SERVING; 1 anything else (down, refused, NOT_SERVING, a
// server of another identity); 2 a configuration error. Each failure prints
// one line on stderr.
func probe(args []string, lookup config.LookupFunc, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "usage: inventory probe (configured by the server's environment)")
		return 2
	}
	cfg, err := config.FromEnv(lookup)
	if err != nil {
		fmt.Fprintf(stderr, "configuration error: %v\n", err)
		return 2
	}
	// FromEnv checked the port is digits, 0-65535. Port 0 is "any free
	// port", which a second process cannot know.
	port := cfg.ListenAddr[strings.LastIndex(cfg.ListenAddr, ":")+1:]
	if n, _ := strconv.Atoi(port); n == 0 {
		fmt.Fprintf(stderr, "configuration error: GRPC_LISTEN_ADDR has port 0: nothing to probe, got %q\n", cfg.ListenAddr)
		return 2
	}
	target := net.JoinHostPort("127.0.0.1", port)

	creds := insecure.NewCredentials()
	if cfg.MTLS {
		// The server's certificate names the service (DNS SAN), not
		// 127.0.0.1 alone: ask for the service, so another one is refused.
		tlsConfig, err := meshtls.ClientConfig(cfg.CertsDir, cfg.Service, cfg.Service)
		if err != nil {
			fmt.Fprintf(stderr, "configuration error: MESH_MTLS is on but the certificate is unusable: %v\n", err)
			return 2
		}
		creds = credentials.NewTLS(tlsConfig)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintf(stderr, "cannot probe %s: %v\n", target, err)
		return 1
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	reply, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	switch {
	case err != nil:
		// One line, whatever the error's text holds.
		fmt.Fprintf(stderr, "%s is not healthy: %s\n", target, strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	case reply.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		fmt.Fprintf(stderr, "%s is not healthy: it reports %s\n", target, reply.GetStatus())
		return 1
	}
	return 0
}
