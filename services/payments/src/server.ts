// Builds the payments gRPC server from its configuration, and stops it well.
//
// `build` opens the store, registers the payments service, the library health
// service and server reflection, binds the port (0 picks a free one, which the
// tests use) and reports SERVING. `shutDown` stops in the order a load
// balancer needs, as the Python services do (mesh/server.py):
//
// 1. health turns NOT_SERVING, so probes and clients stop sending new work;
// 2. after the drain period the server stops accepting calls (tryShutdown);
// 3. calls in flight get the grace period to finish, then are cancelled;
// 4. the database is closed.
//
// With mTLS on (tls.ts) the port serves TLS only, with a required client
// certificate and the certificate reloaded on rotation, and the server is a
// GuardedServer (guards.ts) with Authorization: every call is checked against
// the mesh's policy (authz.ts). With it off the port is plaintext as before, with no
// authorization (there are no peer identities), and a line at start says so.
//
// Past GRPC_MAX_CONCURRENT_RPCS calls in flight (config.ts), ConcurrencyLimit
// (guards.ts) ends each new call at once with RESOURCE_EXHAUSTED; health and
// reflection are never counted or shed. It wraps handlers the way Authorization does,
// before the check, so a shed call costs no policy lookup and keeps its span.
//
// Faults come from faults.ts (MESH_FAULTS_FILE, re-read while serving, over
// FAULT_DELAY_MS / FAULT_ERROR_PERCENT). With MESH_METRICS_ADDRESS set,
// metrics.ts serves /metrics and its interceptor counts every call, ahead of
// every guard; shutDown closes that listener last.
//
// With MESH_HEALTH_PROBE_ADDRESS set, a second gRPC server serves the same
// HealthImplementation, and nothing else, in plaintext: the kubelet's `grpc:`
// probe cannot present the client certificate the main port requires. It
// shares the health state, so it reports NOT_SERVING through the drain, and
// stops only once the main server has.

import * as path from "node:path";
import { format } from "node:util";

import * as grpc from "@grpc/grpc-js";
import { loadSync, type PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath } from "grpc-health-check";

import { PaymentsServiceService } from "../../../gen/ts/shop/payments/v1/payments";
import { ConcurrencyLimit, GuardedServer, type HandlerGuard } from "./guards";
import { Authorization } from "./authz";
import {
  DEFAULT_MAX_CONCURRENT_RPCS,
  faultsEnabled,
  HEALTH_PROBE_ADDRESS_VARIABLE,
  type PaymentsConfig,
  type ServerConfig,
} from "./config";
import { Payments, type PaymentsApi } from "./domain";
import { Faults } from "./faults";
import { log, SERVICE_NAME } from "./logging";
import { type MetricsEndpoint, MetricsListenError, startMetrics } from "./metrics";
import { reflectionDefinition } from "./reflection";
import { serviceResource } from "./resource";
import { errorDetailsDescriptor } from "./rpc-status";
import { paymentsService, SERVICE_FULL_NAME } from "./service";
import { SqlitePaymentStore } from "./store";
import { type CertificateReloader, type MeshSecurity, serverCredentials } from "./tls";

export { SERVICE_FULL_NAME };

// grpc-js writes its own diagnostics to the console as plain text. Every
// failure that matters also reaches this code as an error (a failed bind,
// say, which main.ts reports as its one "cannot start" line), so grpc-js's
// lines go to the JSON log at DEBUG; GRPC_VERBOSITY/GRPC_TRACE still choose
// which ones grpc-js produces.
grpc.setLogger({ error: (...args: unknown[]) => log.debug(`grpc-js: ${format(...args)}`) });

/** The port could not be bound or the database not opened: exit status 1, one line. */
export class StartError extends Error {
  override name = "StartError";
}

export interface BuildOptions {
  /** Replaces the domain over the store (tests inject failures with it). */
  readonly api?: PaymentsApi;
  /** Uniform in [0, 1) for fault injection; Math.random when omitted. */
  readonly random?: () => number;
  /** mTLS and authorization (tls.ts's loadMeshSecurity); off when omitted. */
  readonly security?: MeshSecurity;
  /** Passed to serverCredentials: how often the certificate files are checked without a handshake. */
  readonly backstopCheckMs?: number;
}

export interface PaymentsServer {
  readonly server: grpc.Server;
  readonly health: HealthImplementation;
  readonly store: SqlitePaymentStore;
  /** The bound port: the configured one, or the one picked for port 0. */
  readonly port: number;
  /** Names health reports on: "" (the whole server) and the payments service. */
  readonly healthNames: readonly string[];
  /** The certificate reloader with mTLS on, else null. */
  readonly reloader: CertificateReloader | null;
  /** The concurrency limit and its counts; null when GRPC_MAX_CONCURRENT_RPCS is 0. */
  readonly limit: ConcurrencyLimit | null;
  /** The fault rules in force (MESH_FAULTS_FILE, FAULT_*). */
  readonly faults: Faults;
  /** The Prometheus listener; null when MESH_METRICS_ADDRESS is unset. shutDown closes it. */
  readonly metrics: MetricsEndpoint | null;
  /** The health-only plaintext listener; null when MESH_HEALTH_PROBE_ADDRESS is unset. shutDown stops it. */
  readonly healthProbe: HealthProbe | null;
}

export interface HealthProbe {
  /** A plain grpc.Server: no guard, interceptor, reflection or payments service. */
  readonly server: grpc.Server;
  /** The bound port: the configured one, or the one picked for port 0. */
  readonly port: number;
}

/**
 * What server reflection serves: the payments contract (with its imports),
 * health and reflection itself, so `grpcurl list` shows all three. Loaded
 * with proto-loader at run time because @grpc/reflection reads proto-loader
 * package definitions (the ts-proto stubs carry no descriptors), then
 * repaired for protobuf-go clients such as grpcurl (see reflection.ts).
 */
export function loadReflectionDefinition(protoDir: string): PackageDefinition {
  const reflectionProtos = path.join(path.dirname(require.resolve("@grpc/reflection/package.json")), "build", "proto");
  const loaded = loadSync(
    [
      "shop/payments/v1/payments.proto",
      "health/v1/health.proto",
      "grpc/reflection/v1/reflection.proto",
      "grpc/reflection/v1alpha/reflection.proto",
    ],
    {
      // Field names as written in the contract (`expiry_month`), not camelCase.
      keepCase: true,
      // google/protobuf/*.proto come bundled with protobufjs.
      includeDirs: [protoDir, path.resolve(path.dirname(healthProtoPath), "..", ".."), reflectionProtos],
    },
  );
  return reflectionDefinition(loaded, [errorDetailsDescriptor()]);
}

function bind(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (error, port) => {
      if (error !== null) {
        reject(error);
      } else {
        resolve(port);
      }
    });
  });
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Serves `health` alone, in plaintext, on `address`; a failed bind is a StartError naming the variable. */
async function startHealthProbe(health: HealthImplementation, address: string): Promise<HealthProbe> {
  const server = new grpc.Server();
  health.addToServer(server);
  let port: number;
  try {
    port = await bind(server, address, grpc.ServerCredentials.createInsecure());
  } catch (error) {
    server.forceShutdown();
    throw new StartError(`cannot listen on ${HEALTH_PROBE_ADDRESS_VARIABLE}=${address}: ${reason(error)}`);
  }
  // Nothing after this bind can fail the start, so the line cannot precede a "cannot start".
  log.info(`health probe at ${address.replace(/:\d+$/, `:${port}`)}: grpc.health.v1.Health only, plaintext`);
  return { server, port };
}

/** Opens the store and returns a bound, SERVING server. */
export async function build(config: PaymentsConfig, options: BuildOptions = {}): Promise<PaymentsServer> {
  let store: SqlitePaymentStore;
  try {
    store = SqlitePaymentStore.open(config.dbPath);
  } catch (error) {
    throw new StartError(`cannot open database ${config.dbPath}: ${reason(error)}`);
  }
  let metrics: MetricsEndpoint | null = null;
  if (config.server.metricsAddress) {
    try {
      metrics = await startMetrics(config.server.metricsAddress, serviceResource());
    } catch (error) {
      store.close();
      throw error instanceof MetricsListenError ? new StartError(error.message) : error;
    }
  }
  const security = options.security;
  let credentials: grpc.ServerCredentials;
  let reloader: CertificateReloader | null = null;
  const limitAt = config.server.maxConcurrentRpcs ?? DEFAULT_MAX_CONCURRENT_RPCS;
  const limit = limitAt > 0 ? new ConcurrencyLimit(limitAt) : null;
  const guards: HandlerGuard[] = limit === null ? [] : [limit];
  if (security?.enabled) {
    try {
      ({ credentials, reloader } = await serverCredentials(security, log, options.backstopCheckMs));
    } catch (error) {
      store.close();
      await metrics?.close();
      throw error; // a ConfigError: main.ts exits 2
    }
    guards.push(new Authorization(security.policy, security.service));
  } else {
    credentials = grpc.ServerCredentials.createInsecure();
  }
  // The metrics interceptor sees each call before any guard, so that shed
  // and denied calls are counted too.
  const serverOptions: grpc.ServerOptions = metrics === null ? {} : { interceptors: [metrics.metrics.interceptor] };
  const server = guards.length > 0 ? new GuardedServer(guards, serverOptions) : new grpc.Server(serverOptions);
  let healthProbe: HealthProbe | null = null;
  try {
    const envFaults = config.server.faults;
    if (faultsEnabled(envFaults)) {
      log.warning("fault injection on", {
        fault_delay_ms: envFaults.delayMs,
        fault_error_percent: envFaults.errorPercent,
      });
    }
    const faults = new Faults({
      env: envFaults,
      file: config.server.faultsFile ?? null,
      // The file's entry for this service: its mesh identity.
      service: security?.service ?? SERVICE_NAME,
      methods: Object.values(PaymentsServiceService).map(({ path }) => path.slice(path.lastIndexOf("/") + 1)),
    });
    const api = options.api ?? new Payments(store);
    const serviceOptions = options.random === undefined ? { faults } : { faults, random: options.random };
    server.addService(PaymentsServiceService, paymentsService(api, serviceOptions));
    const health = new HealthImplementation();
    health.addToServer(server);
    new ReflectionService(loadReflectionDefinition(config.protoDir)).addToServer(server);

    let port: number;
    try {
      port = await bind(server, config.server.listenAddr, credentials);
    } catch (error) {
      throw new StartError(`cannot listen on ${config.server.listenAddr}: ${reason(error)}`);
    }
    if (config.server.healthProbeAddress) {
      healthProbe = await startHealthProbe(health, config.server.healthProbeAddress);
    }
    // Said once bound, so that a failed start stays one "cannot start" line.
    if (security?.enabled) {
      log.info(`mTLS on: serving as ${security.service} with certificates from ${security.certsDir}`);
    } else {
      log.info("mTLS is off (MESH_MTLS): serving plaintext, without authorization");
    }
    // grpc-js serves as soon as the port is bound (Server.start is deprecated).
    const healthNames = ["", SERVICE_FULL_NAME];
    for (const name of healthNames) {
      health.setStatus(name, "SERVING");
    }
    return { server, health, store, port, healthNames, reloader, limit, faults, metrics, healthProbe };
  } catch (error) {
    server.forceShutdown();
    healthProbe?.server.forceShutdown();
    store.close();
    await metrics?.close();
    throw error;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Stops serving gracefully (see the steps at the top) and closes the store. */
export async function shutDown(payments: PaymentsServer, config: ServerConfig): Promise<void> {
  for (const name of payments.healthNames) {
    payments.health.setStatus(name, "NOT_SERVING");
  }
  if (config.drainSeconds > 0) {
    log.info(`draining for ${config.drainSeconds}s`);
    await sleep(config.drainSeconds * 1000);
  }
  log.info(`stopping: calls in flight get ${config.graceSeconds}s to finish`);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      log.warning("grace period over: cancelling the calls still running");
      payments.server.forceShutdown();
      resolve();
    }, config.graceSeconds * 1000);
    payments.server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  // Only now, so that a probe during the drain and the grace period is
  // answered NOT_SERVING rather than refused. Forced: a Check is answered at
  // once, and a Watch stream never ends by itself, so tryShutdown could wait
  // for ever.
  payments.healthProbe?.server.forceShutdown();
  payments.store.close();
  // Last, so that a scrape during the drain still sees the calls ending.
  await payments.metrics?.close();
}
