// RED metrics of every call the payments server handles, for Prometheus at
// GET http://<MESH_METRICS_ADDRESS>/metrics; the same metrics in every
// language of the mesh:
//
// - histogram rpc.server.call.duration (seconds), by rpc.service,
//   rpc.method, rpc.grpc.status_code (the code's name: "OK", "UNAVAILABLE")
//   and mesh.caller (the caller's mesh identity, authz.ts's meshCaller:
//   "orders", or "unknown" without mTLS); Prometheus shows
//   rpc_server_call_duration_seconds_{bucket,count,sum};
// - counter rpc.server.retry_attempts, by rpc.service, rpc.method and
//   mesh.caller: calls carrying grpc-previous-rpc-attempts, the header a gRPC
//   client's retry puts on every attempt after the first (gRPC A6);
//   Prometheus shows rpc_server_retry_attempts_total.
//
// Counted by a grpc-js server interceptor, which sees every call of every
// shape, health and reflection included, from its arrival (before the
// concurrency limit, the authorization check, the injected delay and the
// handler) to the status sent, whoever sends it: shed, denied, faulted and
// failed calls are counted with their code. A call that ends before any
// status is sent is counted when grpc-js reports it ended: DEADLINE_EXCEEDED
// when its deadline passed (grpc-js sent that status itself), else CANCELLED.
//
// OpenTelemetry's metrics SDK with its Prometheus exporter as the one reader.
// The provider is the server's own, never the global one: nothing else
// (the gRPC instrumentation, say) records through it, so each call is
// counted once. The exporter serves from our HTTP listener rather than its
// own, which reads port 0 as "the default port, 9464" and cannot say which
// port it bound.

import { createServer, type Server as HttpServer } from "node:http";
import { performance } from "node:perf_hooks";

import * as grpc from "@grpc/grpc-js";
import type { Attributes, Counter, Histogram, Meter } from "@opentelemetry/api";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import type { Resource } from "@opentelemetry/resources";
import { AggregationType, MeterProvider } from "@opentelemetry/sdk-metrics";

import { meshCaller, UNKNOWN_CALLER } from "./authz";
import { METRICS_ADDRESS_VARIABLE } from "./config";
import { log } from "./logging";
import { endedBy } from "./service";

export const DURATION_METRIC = "rpc.server.call.duration";
export const RETRY_METRIC = "rpc.server.retry_attempts";
/** The header gRPC's client retry adds to every attempt after the first (gRPC A6). */
export const PREVIOUS_ATTEMPTS_HEADER = "grpc-previous-rpc-attempts";
/** Seconds; suited to RPC latency, the same in every language of the mesh. */
export const DURATION_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
/** The meter (Prometheus: otel_scope_name) of the mesh's own metrics, as in Python. */
const METER_NAME = "mesh";
/**
 * The name the duration's stream is exported under. The JavaScript exporter,
 * unlike Python's and Go's, does not add the unit to a Prometheus name, so
 * the view names it as those show it: rpc_server_call_duration_seconds.
 */
const DURATION_STREAM = `${DURATION_METRIC}_seconds`;

/** `/pkg.Service/Method` as rpc.service and rpc.method. */
function rpcAttributes(path: string): { "rpc.service": string; "rpc.method": string } {
  const slash = path.lastIndexOf("/");
  return { "rpc.service": path.slice(1, slash), "rpc.method": path.slice(slash + 1) };
}

function codeName(code: number): string {
  return grpc.status[code] ?? String(code);
}

/** Records the calls of the server it intercepts. */
export class CallMetrics {
  private readonly duration: Histogram;
  private readonly retries: Counter;

  constructor(meter: Meter) {
    this.duration = meter.createHistogram(DURATION_METRIC, {
      unit: "s",
      description: "Duration of the RPCs this server handled, from arrival to status, by code and caller.",
      advice: { explicitBucketBoundaries: [...DURATION_BUCKETS] },
    });
    this.retries = meter.createCounter(RETRY_METRIC, {
      description: `RPCs this server handled that were retry attempts (they carried ${PREVIOUS_ATTEMPTS_HEADER}).`,
    });
  }

  /** For the server's `interceptors` option. */
  readonly interceptor: grpc.ServerInterceptor = (descriptor, call) => {
    const started = performance.now();
    let caller = UNKNOWN_CALLER;
    try {
      caller = meshCaller(call.getAuthContext());
    } catch {
      // A connection gone before the call was looked at: no identity to read.
    }
    const attributes: Attributes = { ...rpcAttributes(descriptor.path), "mesh.caller": caller };
    let ended = false;
    const end = (code: number): void => {
      if (!ended) {
        ended = true;
        const seconds = (performance.now() - started) / 1000;
        this.duration.record(seconds, { ...attributes, "rpc.grpc.status_code": codeName(code) });
      }
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            if (metadata.get(PREVIOUS_ATTEMPTS_HEADER).length > 0) {
              this.retries.add(1, attributes);
            }
            nextMetadata(metadata);
          },
          // Also reported after every status sent, which `ended` leaves out.
          onCancel: () => end(endedBy(call.getDeadline())),
        }),
      sendStatus: (status, next) => {
        end(status.code);
        next(status);
      },
    });
  };
}

/** The /metrics listener and what feeds it. */
export interface MetricsEndpoint {
  readonly metrics: CallMetrics;
  /** The bound port: the configured one, or the one picked for port 0. */
  readonly port: number;
  /** Stops the listener and the provider. */
  close(): Promise<void>;
}

/** The listener could not be bound; the message names MESH_METRICS_ADDRESS. */
export class MetricsListenError extends Error {
  override name = "MetricsListenError";
}

/** `host:port` (config.ts checked the form) as Node's listen() takes it: `[::1]` loses its brackets. */
function hostAndPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  return { host: address.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port: Number(address.slice(colon + 1)) };
}

/** Starts the metrics of one server, served on `address` (`host:port`). */
export async function startMetrics(address: string, resource: Resource): Promise<MetricsEndpoint> {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({
    resource,
    readers: [exporter],
    views: [
      {
        instrumentName: DURATION_METRIC,
        name: DURATION_STREAM,
        aggregation: {
          type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM,
          options: { boundaries: [...DURATION_BUCKETS] },
        },
      },
    ],
  });
  const server: HttpServer = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://metrics").pathname;
    if (request.method === "GET" && path === "/metrics") {
      exporter.getMetricsRequestHandler(request, response);
      return;
    }
    response.statusCode = request.method === "GET" ? 404 : 405;
    response.end();
  });
  const { host, port } = hostAndPort(address);
  let bound: number;
  try {
    bound = await new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => {
        server.off("error", reject);
        const info = server.address();
        resolve(typeof info === "object" && info !== null ? info.port : port);
      });
    });
  } catch (error) {
    await provider.shutdown();
    const reason = error instanceof Error ? error.message : String(error);
    throw new MetricsListenError(`cannot listen on ${METRICS_ADDRESS_VARIABLE}=${address}: ${reason}`);
  }
  server.on("error", (error) => log.warning("metrics listener failed", { error: String(error) }));
  log.info(`metrics for Prometheus at http://${address.replace(/:\d+$/, `:${bound}`)}/metrics`);
  return {
    metrics: new CallMetrics(provider.getMeter(METER_NAME)),
    port: bound,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // A scraper's keep-alive connection would hold close() open.
        server.closeAllConnections();
      });
      await provider.shutdown();
    },
  };
}
