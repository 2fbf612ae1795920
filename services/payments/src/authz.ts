// Enforcing the mesh's authorization policy (policy.ts, read from the file by
// policy-file.ts) in payments' grpc-js server: the caller's identity is the
// SPIFFE ID in its verified TLS client certificate. This module loads
// @grpc/grpc-js only when an interceptor is made, so the policy can be loaded
// before telemetry installs its hook (see main.ts).

import type { PeerCertificate } from "node:tls";

import type * as GrpcModule from "@grpc/grpc-js";

import { log, type Logger } from "./logging";
import { checkService, type Policy } from "./policy";

/** What grpc-js's `call.getAuthContext()` returns (the type is not exported by name). */
export type AuthContext = ReturnType<GrpcModule.ServerInterceptingCallInterface["getAuthContext"]>;

/**
 * The entries of a certificate's subjectaltname as Node writes it
 * (`URI:spiffe://shop.local/orders, DNS:orders, IP Address:127.0.0.1`; a
 * value with a comma or quote is JSON-quoted), or null if it cannot be read.
 */
export function subjectAltNames(text: string): [string, string][] | null {
  const entry = /([A-Za-z][A-Za-z ]*):("(?:[^"\\]|\\.)*"|[^,"]*)(?:, |$)/y;
  const names: [string, string][] = [];
  while (entry.lastIndex < text.length) {
    const match = entry.exec(text);
    if (match === null) {
      return null;
    }
    const [, type, value] = match as unknown as [string, string, string];
    try {
      names.push([type, value.startsWith('"') ? (JSON.parse(value) as string) : value]);
    } catch {
      return null;
    }
  }
  return names;
}

/**
 * The SPIFFE ID in a peer certificate: its one `spiffe://` URI SAN, in any
 * trust domain (the policy refuses a foreign one, and a denial names it).
 * Null without a certificate, or with no or several SPIFFE IDs (an X.509
 * SVID has exactly one).
 */
export function spiffeIdOf(certificate: PeerCertificate | undefined | null): string | null {
  const text = certificate?.subjectaltname;
  if (typeof text !== "string") {
    return null;
  }
  const uris = (subjectAltNames(text) ?? [])
    .filter(([type, value]) => type === "URI" && value.startsWith("spiffe://"))
    .map(([, value]) => value);
  return uris.length === 1 ? (uris[0] as string) : null;
}

/** The caller's identity on a call: the SPIFFE ID of its verified TLS client certificate. */
export function peerIdentity(context: AuthContext | null | undefined): string | null {
  // grpc-js (1.14 here) gives the certificate only on a TLS connection whose
  // peer it verified against the server's roots; a plaintext one has none.
  return spiffeIdOf(context?.sslPeerCertificate);
}

/** The PERMISSION_DENIED details of a refused call. */
export function denial(identity: string | null, method: string): string {
  return `caller ${identity ?? "no identity"} may not call ${method}`;
}

/**
 * A grpc-js server interceptor that lets through only the calls `policy`
 * allows on `service` (health always), and answers the others
 * PERMISSION_DENIED naming the caller and the method, logged at WARNING.
 * Install it with `new grpc.Server({ interceptors: [...] })`.
 */
export function authorizationInterceptor(
  policy: Policy,
  service: string,
  logger: Logger = log,
): GrpcModule.ServerInterceptor {
  checkService(service);
  const grpc = require("@grpc/grpc-js") as typeof GrpcModule;
  return (methodDescriptor, call) => {
    const method = methodDescriptor.path;
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const identity = peerIdentity(call.getAuthContext());
        if (policy.allows(service, identity, method)) {
          next(metadata);
          return;
        }
        const details = denial(identity, method);
        logger.warning(details, { caller: identity, method, peer: call.getPeer() });
        call.sendStatus({ code: grpc.status.PERMISSION_DENIED, details, metadata: new grpc.Metadata() });
      })
      .build();
    const responder = new grpc.ResponderBuilder().withStart((next) => next(listener)).build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}
