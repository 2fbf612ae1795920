// Enforcing the mesh's authorization policy (policy.ts, read from the file by
// policy-file.ts) in payments' grpc-js server, as mesh/authz.py does for the
// Python services: the caller's identity is the SPIFFE ID in its verified TLS
// client certificate, and
//
// - `Policy.allows(service, identity, method)` must say yes (health is always
//   open; reflection only where the policy lists it);
// - a call carrying the gateway's customer header (x-shop-subject) must come
//   from the gateway's identity: the header says whom the gateway vouches
//   for, and nobody else may vouch. Such a call is refused, not served with
//   the header ignored (that would make it an internal call, trusted for
//   every customer).
//
// A refusal is PERMISSION_DENIED with the reason, one WARNING log line with
// the caller and the method, and the server span marked: status ERROR and
// mesh.authz.denied / mesh.authz.caller.
//
// Why the check wraps each handler instead of being a grpc-js server
// interceptor: OpenTelemetry's grpc instrumentation starts the server span
// when grpc-js invokes the handler (it wraps what `Server.register` stores),
// after every interceptor has already run; only a check inside the handler
// runs in the span, so that the span can be marked and the log line carries
// its trace id. guards.ts's AuthorizedServer wraps every handler registered
// on it, whatever the service, so no RPC of any shape is reached around the
// check.
//
// This module loads @grpc/grpc-js only when a refusal is made, so the policy
// can be loaded before telemetry installs its hook (see main.ts).

import type { PeerCertificate } from "node:tls";

import type * as GrpcModule from "@grpc/grpc-js";
import { SpanStatusCode, trace } from "@opentelemetry/api";

import { log, type Logger } from "./logging";
import { checkService, HEALTH_SERVICE, isService, type Policy } from "./policy";

/** The gateway's customer header (mesh/identity.py SUBJECT_HEADER). */
export const SUBJECT_HEADER = "x-shop-subject";
const GATEWAY = "gateway";
// The same wording as the Python and Go interceptors: one message in every language.
const NO_IDENTITY = "no identity";

/** What grpc-js's `call.getAuthContext()` returns (the type is not exported by name). */
export type AuthContext = ReturnType<SurfaceCall["getAuthContext"]>;

/** What every server call of grpc-js has (its ServerSurfaceCall, not exported by name). */
export type SurfaceCall = Pick<GrpcModule.ServerUnaryCall<unknown, unknown>, "getAuthContext" | "metadata">;

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

/** What metrics call a caller without a verified identity (mTLS off, or no SPIFFE ID). */
export const UNKNOWN_CALLER = "unknown";
const SPIFFE_SERVICE = /^spiffe:\/\/[^/]+\/([^/]+)$/;

/**
 * The caller's mesh identity as a short service name (`orders` for
 * `spiffe://shop.local/orders`), or UNKNOWN_CALLER: the `mesh.caller` of the
 * metrics. Only the shop's service names, so that a metric label never holds
 * whatever a certificate says.
 */
export function meshCaller(context: AuthContext | null | undefined): string {
  const name = SPIFFE_SERVICE.exec(peerIdentity(context) ?? "")?.[1];
  return name !== undefined && isService(name) ? name : UNKNOWN_CALLER;
}

/**
 * Why `identity` (a SPIFFE ID, null without one) may not make this call on
 * `service`, or null when it may. The messages are mesh/authz.py's `denial`.
 */
export function denial(
  policy: Policy,
  service: string,
  identity: string | null,
  method: string,
  metadata: Pick<GrpcModule.Metadata, "get"> | null,
): string | null {
  const who = `caller ${identity ?? NO_IDENTITY}`;
  if (method.startsWith(`/${HEALTH_SERVICE}/`)) {
    return null; // open to every caller, whatever its metadata says
  }
  if (!policy.allows(service, identity, method)) {
    return `${who} may not call ${method}`;
  }
  const gateway = policy.identity(GATEWAY);
  if (identity !== gateway && (metadata?.get(SUBJECT_HEADER).length ?? 0) > 0) {
    return `${who} may not send ${SUBJECT_HEADER} (only ${gateway} may) calling ${method}`;
  }
  return null;
}

/** A grpc-js handler of any of the four shapes, as `Server.register` takes it. */
export type Handler = GrpcModule.UntypedHandleCall;

/** Refuses every call `policy` does not allow `service` to take from its caller. */
export class Authorization {
  constructor(
    readonly policy: Policy,
    readonly service: string,
    private readonly logger: Logger = log,
  ) {
    checkService(service);
  }

  /**
   * The error to end the call with, or null to let it through. A refusal is
   * logged and marks the active span (the server span, when the check runs
   * inside the handler).
   */
  check(method: string, call: SurfaceCall): GrpcModule.ServiceError | null {
    const identity = peerIdentity(call.getAuthContext());
    const reason = denial(this.policy, this.service, identity, method, call.metadata);
    if (reason === null) {
      return null;
    }
    this.logger.warning(`permission denied: ${reason}`, { caller: identity, method, target: this.service });
    const span = trace.getActiveSpan();
    span?.setAttribute("mesh.authz.denied", true);
    span?.setAttribute("mesh.authz.caller", identity ?? "");
    span?.setStatus({ code: SpanStatusCode.ERROR, message: reason });
    const grpc = require("@grpc/grpc-js") as typeof GrpcModule;
    // An Error whose message is the reason too: the instrumentation sets the
    // span's status message from `message` when the call ends.
    return Object.assign(new Error(reason), {
      code: grpc.status.PERMISSION_DENIED,
      details: reason,
      metadata: new grpc.Metadata(),
    });
  }

  /**
   * `handler` with the check run first, for each of grpc-js's handler types;
   * an unknown type is refused rather than left unguarded.
   */
  guard(method: string, type: string, handler: Handler): Handler {
    switch (type) {
      case "unary":
      case "clientStream": {
        const answer = handler as GrpcModule.handleUnaryCall<unknown, unknown>;
        const guarded: GrpcModule.handleUnaryCall<unknown, unknown> = (call, callback) => {
          const refusal = this.check(method, call);
          if (refusal !== null) {
            return callback(refusal);
          }
          return answer(call, callback);
        };
        return guarded as Handler;
      }
      case "serverStream":
      case "bidi": {
        const stream = handler as GrpcModule.handleServerStreamingCall<unknown, unknown>;
        const guarded: GrpcModule.handleServerStreamingCall<unknown, unknown> = (call) => {
          const refusal = this.check(method, call);
          if (refusal !== null) {
            // grpc-js ends a streaming call with the status of an 'error' event.
            call.emit("error", refusal);
            return;
          }
          stream(call);
        };
        return guarded as Handler;
      }
      default:
        throw new Error(`cannot guard ${method}: unknown handler type ${type}`);
    }
  }
}
