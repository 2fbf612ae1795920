// Command echo-go is the grpc-go anchor of bench/anchors.md: a server whose
// only method, /bench.v1.Echo/Echo, returns the request's bytes.
//
// No .proto: a raw-bytes codec is forced on the server, so a message is never
// decoded, and an unknown-service handler takes every call, so no service is
// registered. Nothing else runs: no interceptors, health, reflection or
// telemetry, which is the point of an anchor (the least grpc-go costs a
// call on this machine). Readiness is a successful Echo call.
//
// Usage: echo-go --listen 127.0.0.1:PORT
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shopmesh/bench/echo-go/rawcodec"
)

// EchoMethod is the one method served; any other is UNIMPLEMENTED.
const EchoMethod = "/bench.v1.Echo/Echo"

// echo answers every call of EchoMethod with its request's bytes.
func echo(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	if method != EchoMethod {
		return status.Errorf(codes.Unimplemented, "unknown method %s: only %s is served", method, EchoMethod)
	}
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	return stream.SendMsg(&request)
}

func main() {
	listen := flag.String("listen", "", "HOST:PORT to serve on")
	flag.Parse()
	if *listen == "" {
		fmt.Fprintln(os.Stderr, "usage: echo-go --listen HOST:PORT")
		os.Exit(2)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen on %s: %v", *listen, err)
	}
	server := grpc.NewServer(grpc.ForceServerCodec(rawcodec.Codec{}), grpc.UnknownServiceHandler(echo))
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
