// Guards around every handler of the payments server: GuardedServer runs
// each registered handler inside them (inside the OpenTelemetry server span),
// AuthorizedServer is one with the mesh's authorization check, and
// ConcurrencyLimit sheds calls past GRPC_MAX_CONCURRENT_RPCS. server.ts
// builds the server from them.

import * as grpc from "@grpc/grpc-js";

import { type Authorization, type Handler } from "./authz";
import { MAX_CONCURRENT_RPCS_VARIABLE } from "./config";
import { log, type Logger } from "./logging";
import { HEALTH_SERVICE } from "./policy";

/** What wraps a handler of any shape: Authorization and ConcurrencyLimit. */
export interface HandlerGuard {
  guard(method: string, type: string, handler: Handler): Handler;
}

/**
 * A grpc-js server whose every handler runs inside its guards, the first
 * outermost. The guards go into `register`, which `addService` calls for
 * each method (of payments, health and reflection alike), beneath the
 * OpenTelemetry instrumentation's wrapper of the same method (it patches
 * Server.prototype.register, reached through `super`): so they run inside
 * the server span, which interceptors would not (see authz.ts).
 */
export class GuardedServer extends grpc.Server {
  constructor(
    private readonly guards: readonly HandlerGuard[],
    options?: grpc.ServerOptions,
  ) {
    super(options);
  }

  override register<RequestType, ResponseType>(
    name: string,
    handler: grpc.UntypedHandleCall,
    serialize: grpc.serialize<ResponseType>,
    deserialize: grpc.deserialize<RequestType>,
    type: string,
  ): boolean {
    const guarded = this.guards.reduceRight((inner, guard) => guard.guard(name, type, inner), handler);
    return super.register(name, guarded, serialize, deserialize, type);
  }
}

/** A GuardedServer whose every handler runs the authorization check first. */
export class AuthorizedServer extends GuardedServer {
  constructor(authorization: Authorization, options?: grpc.ServerOptions) {
    super([authorization], options);
  }
}

const UNCOUNTED_PREFIXES = [`/${HEALTH_SERVICE}/`, "/grpc.reflection."];

/**
 * Ends calls past `limit` in flight at once with RESOURCE_EXHAUSTED, as
 * mesh/server.py's ConcurrencyLimit and the inventory's limiter do. A call
 * holds its place from the handler's start to its end: the callback of a
 * unary or client-streaming call, the end of a server or bidi stream, or a
 * cancellation, whichever comes first. Health and reflection are neither
 * counted nor shed, so a probe reaches a busy server and hears it is up.
 * grpc-js has no limit of its own (its `grpc.max_concurrent_streams` is per
 * connection, and makes clients wait rather than fail).
 */
export class ConcurrencyLimit implements HandlerGuard {
  /** One WARNING line at most this often while shedding, not one per call. */
  static readonly LOG_INTERVAL_MS = 10_000;

  inFlight = 0;
  /** Calls refused since start. */
  shed = 0;
  readonly message: string;
  private loggedAt: number | null = null;
  private loggedShed = 0;

  constructor(
    readonly limit: number,
    private readonly logger: Logger = log,
    private readonly now: () => number = Date.now,
  ) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(`a concurrency limit is a positive integer, got ${limit}`);
    }
    this.message = `server busy: ${limit} calls in flight, the limit (${MAX_CONCURRENT_RPCS_VARIABLE})`;
  }

  private refusal(method: string): grpc.ServiceError {
    this.shed += 1;
    const now = this.now();
    if (this.loggedAt === null || now - this.loggedAt >= ConcurrencyLimit.LOG_INTERVAL_MS) {
      this.logger.warning("shedding calls past the concurrency limit", {
        limit: this.limit,
        variable: MAX_CONCURRENT_RPCS_VARIABLE,
        shed_since_last_line: this.shed - this.loggedShed,
        method,
      });
      this.loggedAt = now;
      this.loggedShed = this.shed;
    }
    return Object.assign(new Error(this.message), {
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: this.message,
      metadata: new grpc.Metadata(),
    });
  }

  /** Takes a place, and returns the function that gives it back (once, however often called). */
  private admit(): () => void {
    this.inFlight += 1;
    let held = true;
    return () => {
      if (held) {
        held = false;
        this.inFlight -= 1;
      }
    };
  }

  guard(method: string, type: string, handler: Handler): Handler {
    if (UNCOUNTED_PREFIXES.some((prefix) => method.startsWith(prefix))) {
      return handler;
    }
    switch (type) {
      case "unary":
      case "clientStream": {
        const answer = handler as grpc.handleUnaryCall<unknown, unknown>;
        const limited: grpc.handleUnaryCall<unknown, unknown> = (call, callback) => {
          if (this.inFlight >= this.limit) {
            return callback(this.refusal(method));
          }
          const release = this.admit();
          call.once("cancelled", release);
          try {
            return answer(call, (...args: Parameters<typeof callback>) => {
              release();
              return callback(...args);
            });
          } catch (error) {
            release(); // grpc-js answers UNKNOWN; the place is free either way
            throw error;
          }
        };
        return limited as Handler;
      }
      case "serverStream":
      case "bidi": {
        const stream = handler as grpc.handleServerStreamingCall<unknown, unknown>;
        const limited: grpc.handleServerStreamingCall<unknown, unknown> = (call) => {
          if (this.inFlight >= this.limit) {
            // grpc-js ends a streaming call with the status of an 'error' event.
            call.emit("error", this.refusal(method));
            return;
          }
          const release = this.admit();
          // 'finish' once the status is sent (an 'error' event ends the
          // stream too), 'cancelled' and 'close' when the call is cut short.
          for (const event of ["finish", "close", "cancelled"]) {
            call.once(event, release);
          }
          try {
            stream(call);
          } catch (error) {
            release();
            throw error;
          }
        };
        return limited as Handler;
      }
      default:
        throw new Error(`cannot limit ${method}: unknown handler type ${type}`);
    }
  }
}
