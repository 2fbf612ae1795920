package authz

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// PeerIdentity is the SPIFFE ID of the call's peer: the one spiffe:// URI
// SAN of the client certificate verified in the TLS handshake, as written
// (of any trust domain: the policy decides about that). It is false
// without TLS, without a client certificate, when the certificate was not
// verified against the server's client CAs (tls.RequireAnyClientCert), and
// when the leaf has no or more than one spiffe:// URI.
func PeerIdentity(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return "", false
	}
	var info credentials.TLSInfo
	switch auth := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		info = auth
	case *credentials.TLSInfo:
		info = *auth
	default:
		return "", false
	}
	state := info.State
	if len(state.PeerCertificates) == 0 || len(state.VerifiedChains) == 0 {
		return "", false
	}
	identity := ""
	for _, uri := range uriSANs(state.PeerCertificates[0]) {
		if !strings.HasPrefix(uri, "spiffe://") {
			continue
		}
		if identity != "" {
			return "", false // more than one: which would it be?
		}
		identity = uri
	}
	return identity, identity != ""
}

// UnknownCaller names the caller of a call without a verified identity of
// one of the shop's services (mTLS off, no certificate, a foreign one).
const UnknownCaller = "unknown"

// Caller is the short name of the shop service that made the call
// ("orders"), from the identity PeerIdentity reads, in policy's trust
// domain; UnknownCaller without one, or when policy is nil (mTLS off). A
// name of the shop's six or UnknownCaller, never a name the peer chose: it
// labels metrics, which must not grow without bound.
func Caller(ctx context.Context, policy *Policy) string {
	if policy == nil {
		return UnknownCaller
	}
	identity, _ := PeerIdentity(ctx)
	if name, ok := policy.CallerName(identity); ok {
		return name
	}
	return UnknownCaller
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// uriSANs is the certificate's URI SANs as written. Certificate.URIs will
// not do: net/url lower-cases the scheme, and SPIFFE (and mesh.certs, which
// reads the raw SAN) takes only a lower-case "spiffe://".
func uriSANs(cert *x509.Certificate) []string {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &names); err != nil || len(rest) > 0 ||
			names.Class != asn1.ClassUniversal || names.Tag != asn1.TagSequence {
			return nil
		}
		var uris []string
		for data := names.Bytes; len(data) > 0; {
			var name asn1.RawValue
			var err error
			if data, err = asn1.Unmarshal(data, &name); err != nil {
				return nil
			}
			const uniformResourceIdentifier = 6 // GeneralName's [6] IA5String
			if name.Class == asn1.ClassContextSpecific && name.Tag == uniformResourceIdentifier {
				uris = append(uris, string(name.Bytes))
			}
		}
		return uris
	}
	return nil
}

// SubjectHeader is the gateway's customer header (mesh/identity.py): whom
// the gateway vouches for. Only the gateway's identity may send it.
const SubjectHeader = "x-shop-subject"

// gateway is the one service whose calls may carry SubjectHeader.
const gateway = "gateway"

// Denied is the PERMISSION_DENIED status of a call the policy refuses,
// naming the caller's identity (or "no identity") and the method.
func Denied(identity, fullMethod string) error {
	return status.Error(codes.PermissionDenied,
		fmt.Sprintf("caller %s may not call %s", describe(identity), fullMethod))
}

func describe(identity string) string {
	if identity == "" {
		return "no identity"
	}
	return identity
}

// Denial is why identity (a SPIFFE ID, "" without one) may not make this
// call to service, or "" when it may: mesh/authz.py's denial, word for word.
// Health is open whatever the metadata says. A call the policy allows is
// still refused when it carries SubjectHeader from anyone but the gateway:
// ignoring the header instead would make it an internal call, trusted to act
// for every customer.
func Denial(policy *Policy, service, identity, fullMethod string, md metadata.MD) string {
	if strings.HasPrefix(fullMethod, "/"+HealthService+"/") {
		return ""
	}
	if !policy.Allows(service, identity, fullMethod) {
		return status.Convert(Denied(identity, fullMethod)).Message()
	}
	// Incoming metadata keys are lower case, as SubjectHeader is.
	if _, sent := md[SubjectHeader]; sent && identity != policy.Identity(gateway) {
		return fmt.Sprintf("caller %s may not send %s (only %s may) calling %s",
			describe(identity), SubjectHeader, policy.Identity(gateway), fullMethod)
	}
	return ""
}

// authorize is the interceptors' one decision: nil, or the denial, logged
// and marked on the server span as mesh/authz.py marks it: status ERROR,
// mesh.authz.denied=true, mesh.authz.caller (the identity, "" without one).
// The interceptors run inside the server span that the stats handler
// (otelgrpc) started, so trace.SpanFromContext is that span.
func authorize(ctx context.Context, policy *Policy, service, fullMethod string) error {
	identity, _ := PeerIdentity(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	message := Denial(policy, service, identity, fullMethod, md)
	if message == "" {
		return nil
	}
	slog.WarnContext(ctx, "permission denied: "+message,
		"caller", identity, "method", fullMethod, "target", service)
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(
		attribute.Bool("mesh.authz.denied", true),
		attribute.String("mesh.authz.caller", identity),
	)
	// otelgrpc leaves a server span's status unset for PERMISSION_DENIED, and
	// an unset status does not replace this one.
	span.SetStatus(otelcodes.Error, message)
	return status.Error(codes.PermissionDenied, message)
}

func mustBeService(policy *Policy, service string) {
	if policy == nil {
		panic("authz: nil policy")
	}
	if !IsService(service) {
		panic(fmt.Sprintf("authz: %q is not one of the shop's services", service))
	}
}

// UnaryServerInterceptor enforces policy on the unary calls of service
// (the shop's name for this server, e.g. "inventory"). It panics when
// service is not one of the shop's services or policy is nil: a programming
// error, caught when the server is built.
func UnaryServerInterceptor(policy *Policy, service string) grpc.UnaryServerInterceptor {
	mustBeService(policy, service)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo,
		handler grpc.UnaryHandler) (any, error) {
		if err := authorize(ctx, policy, service, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming calls.
func StreamServerInterceptor(policy *Policy, service string) grpc.StreamServerInterceptor {
	mustBeService(policy, service)
	return func(srv any, stream grpc.ServerStream, info *grpc.StreamServerInfo,
		handler grpc.StreamHandler) error {
		if err := authorize(stream.Context(), policy, service, info.FullMethod); err != nil {
			return err
		}
		return handler(srv, stream)
	}
}
