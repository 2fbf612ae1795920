// Command proxy-go is the floor of a gateway written in Go, beside the
// Python ones of bench/gateway.md: an unknown-service handler takes every
// call as unary, sends its request's bytes to the upstream with the same
// method on one client connection, and returns the response's bytes, or the
// upstream's status. Nothing else: no metadata or deadline forwarded, no
// auth, rate limit, access log or telemetry, as bench/bare_proxy.py does in
// Python, so the two rows compare the languages' gRPC stacks and nothing more.
//
// Usage: proxy-go --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"shopmesh/bench/echo-go/rawcodec"
)

// forwarder sends each call on to its upstream connection.
type forwarder struct {
	upstream *grpc.ClientConn
}

func (f forwarder) forward(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var request, response []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	// The upstream's error is a status error, which grpc-go sends back as it is.
	if err := f.upstream.Invoke(stream.Context(), method, &request, &response); err != nil {
		return err
	}
	return stream.SendMsg(&response)
}

func main() {
	listen := flag.String("listen", "", "HOST:PORT to serve on")
	upstream := flag.String("upstream", "", "HOST:PORT to forward every call to")
	flag.Parse()
	if *listen == "" || *upstream == "" {
		fmt.Fprintln(os.Stderr, "usage: proxy-go --listen HOST:PORT --upstream HOST:PORT")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(
		*upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawcodec.Codec{})),
	)
	if err != nil {
		log.Fatalf("upstream %s: %v", *upstream, err)
	}
	defer conn.Close()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen on %s: %v", *listen, err)
	}
	server := grpc.NewServer(
		grpc.ForceServerCodec(rawcodec.Codec{}),
		grpc.UnknownServiceHandler(forwarder{conn}.forward),
	)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		server.GracefulStop()
	}()
	if err := server.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
