// The payments service's configuration, read once from the environment.
//
// Same variable names and meanings as the Python services (mesh/config.py,
// mesh/server.py): an empty variable counts as unset, and a malformed one
// throws ConfigError naming it, so a bad deployment fails at start with exit
// status 2 instead of on the first request. Of the OTEL_* variables only
// OTEL_SDK_DISABLED, which decides whether the SDK is loaded at all, and
// OTEL_TRACES_EXPORTER, which this SDK setup does not read itself (see
// telemetry.ts), are read here; the SDK reads the others itself.

import { existsSync } from "node:fs";
import * as path from "node:path";

/** An environment variable is missing or malformed; the message names it. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * The repository root (the image's /app): this file is compiled to
 * `<root>/services/payments/dist/services/payments/src/config.js`. Files the
 * MESH_* variables name by a relative path are found from here, as in Python.
 */
export const REPO_ROOT = path.resolve(__dirname, "..", "..", "..", "..", "..", "..");

export type LogLevel = "DEBUG" | "INFO" | "WARNING" | "ERROR";

/**
 * The OTEL_TRACES_EXPORTER values honoured, the default first
 * (tracing/provider.py's TRACES_EXPORTERS). Other exporters are not installed,
 * so naming one is a configuration error rather than a silent no-op.
 */
export const TRACES_EXPORTERS = ["otlp", "none"] as const;
export type TracesExporter = (typeof TRACES_EXPORTERS)[number];

/** Faults to inject into this service's own RPCs; zero means off. */
export interface FaultConfig {
  readonly delayMs: number;
  /** Share of calls failed with UNAVAILABLE, 0 to 100. */
  readonly errorPercent: number;
}

export interface ServerConfig {
  /** `host:port` as given; port 0 picks a free port. */
  readonly listenAddr: string;
  readonly drainSeconds: number;
  readonly graceSeconds: number;
  readonly faults: FaultConfig;
  /**
   * GRPC_MAX_CONCURRENT_RPCS: calls past this many in flight end at once with
   * RESOURCE_EXHAUSTED (guards.ts's ConcurrencyLimit); 0 is no limit. Omitted
   * (a test's configuration), DEFAULT_MAX_CONCURRENT_RPCS.
   */
  readonly maxConcurrentRpcs?: number;
  /**
   * MESH_FAULTS_FILE: the YAML fault rules, re-read while serving when it
   * changes (faults.ts); it need not exist yet. Null or omitted: none.
   */
  readonly faultsFile?: string | null;
  /**
   * MESH_METRICS_ADDRESS: `host:port` of the Prometheus /metrics listener
   * (metrics.ts); port 0 picks a free one. Null or omitted: metrics off.
   */
  readonly metricsAddress?: string | null;
  /**
   * MESH_HEALTH_PROBE_ADDRESS: `host:port` of a second, plaintext gRPC
   * listener that serves grpc.health.v1.Health alone, for the kubelet's
   * `grpc:` probe, which cannot present the client certificate the main port
   * requires with mTLS on; port 0 picks a free one. Null or omitted: none.
   */
  readonly healthProbeAddress?: string | null;
}

export interface PaymentsConfig {
  readonly server: ServerConfig;
  /** better-sqlite3 file; created (with its folder) when missing. */
  readonly dbPath: string;
  /** Folder holding `shop/payments/v1/payments.proto`, for server reflection. */
  readonly protoDir: string;
  readonly logLevel: LogLevel;
  /** False when OTEL_SDK_DISABLED=true: no provider, no exporter, no instrumentation. */
  readonly tracing: boolean;
  /**
   * OTEL_TRACES_EXPORTER: "otlp", or "none" to make, sample and propagate
   * spans but export none.
   */
  readonly tracesExporter: TracesExporter;
}

export const DEFAULT_LISTEN_ADDR = "0.0.0.0:50054";
/** The same name, default and meaning in mesh/server.py and the inventory's config. */
export const MAX_CONCURRENT_RPCS_VARIABLE = "GRPC_MAX_CONCURRENT_RPCS";
export const DEFAULT_MAX_CONCURRENT_RPCS = 1000;
/** The same names in mesh/config.py and the inventory's config. */
export const FAULTS_FILE_VARIABLE = "MESH_FAULTS_FILE";
export const METRICS_ADDRESS_VARIABLE = "MESH_METRICS_ADDRESS";
export const HEALTH_PROBE_ADDRESS_VARIABLE = "MESH_HEALTH_PROBE_ADDRESS";
const PAYMENTS_PROTO = path.join("shop", "payments", "v1", "payments.proto");

type Env = Readonly<Record<string, string | undefined>>;

function raw(env: Env, name: string, fallback: string | undefined): string {
  const value = (env[name] ?? "").trim();
  if (value !== "") {
    return value;
  }
  if (fallback === undefined) {
    throw new ConfigError(`${name} is required but not set`);
  }
  return fallback;
}

function integer(env: Env, name: string, fallback: number, minimum: number): number {
  const text = raw(env, name, String(fallback));
  if (!/^[+-]?\d+$/.test(text)) {
    throw new ConfigError(`${name} must be an integer, got '${text}'`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new ConfigError(`${name} is too large, got '${text}'`);
  }
  if (value < minimum) {
    throw new ConfigError(`${name} must be at least ${minimum}, got ${value}`);
  }
  return value;
}

function number(env: Env, name: string, fallback: number, minimum: number, maximum?: number): number {
  const text = raw(env, name, String(fallback));
  // Number("") and Number(" ") are 0 and Number("0x10") is 16: accept only
  // plain decimal notation, as Python's float() does.
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) {
    throw new ConfigError(`${name} must be a number, got '${text}'`);
  }
  const value = Number(text);
  if (!Number.isFinite(value)) {
    throw new ConfigError(`${name} must be a finite number, got '${text}'`);
  }
  if (value < minimum) {
    throw new ConfigError(`${name} must be at least ${minimum}, got ${value}`);
  }
  if (maximum !== undefined && value > maximum) {
    throw new ConfigError(`${name} must be at most ${maximum}, got ${value}`);
  }
  return value;
}

/** A `host:port` pair such as `0.0.0.0:50054` or `[::1]:0`. */
function address(env: Env, name: string, fallback: string): string {
  const text = raw(env, name, fallback);
  const colon = text.lastIndexOf(":");
  const host = text.slice(0, colon);
  const port = text.slice(colon + 1);
  if (colon < 0 || host === "" || !/^\d+$/.test(port) || Number(port) > 65535) {
    throw new ConfigError(`${name} must be host:port, got '${text}'`);
  }
  return text;
}

function logLevel(env: Env): LogLevel {
  const text = raw(env, "LOG_LEVEL", "INFO").toUpperCase();
  switch (text) {
    case "DEBUG":
    case "INFO":
    case "ERROR":
      return text;
    case "WARN":
    case "WARNING":
      return "WARNING";
    default:
      throw new ConfigError(`LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got '${text}'`);
  }
}

function tracesExporter(env: Env): TracesExporter {
  const name = "OTEL_TRACES_EXPORTER";
  const text = raw(env, name, TRACES_EXPORTERS[0]).toLowerCase();
  const choice = TRACES_EXPORTERS.find((known) => known === text);
  if (choice === undefined) {
    throw new ConfigError(`${name} must be one of ${TRACES_EXPORTERS.join(", ")}, got '${text}'`);
  }
  return choice;
}

/**
 * The folder with the contracts: PAYMENTS_PROTO_DIR, or else the first
 * `protos/` above this file that holds payments.proto. Looking upwards works
 * both in the work tree (services/payments/dist/...) and in the image
 * (/app/services/payments/dist/... next to /app/protos).
 */
function protoDir(env: Env, start: string): string {
  const given = (env["PAYMENTS_PROTO_DIR"] ?? "").trim();
  if (given !== "") {
    if (!existsSync(path.join(given, PAYMENTS_PROTO))) {
      throw new ConfigError(`PAYMENTS_PROTO_DIR must be a folder holding ${PAYMENTS_PROTO}, got '${given}'`);
    }
    return path.resolve(given);
  }
  for (let dir = path.resolve(start); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "protos");
    if (existsSync(path.join(candidate, PAYMENTS_PROTO))) {
      return candidate;
    }
    if (path.dirname(dir) === dir) {
      throw new ConfigError(`PAYMENTS_PROTO_DIR is not set and no protos/ folder was found above ${start}`);
    }
  }
}

/** A `host:port` pair, or null when the variable is unset. */
function optionalAddress(env: Env, name: string): string | null {
  return (env[name] ?? "").trim() === "" ? null : address(env, name, "");
}

/** A file a MESH_* variable names, relative to the repository root; null when unset. */
function meshFile(env: Env, name: string): string | null {
  const text = (env[name] ?? "").trim();
  if (text === "") {
    return null;
  }
  return path.isAbsolute(text) ? text : path.join(REPO_ROOT, text);
}

export function faultsEnabled(faults: FaultConfig): boolean {
  return faults.delayMs > 0 || faults.errorPercent > 0;
}

/** Reads the whole configuration; throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): PaymentsConfig {
  return {
    server: {
      listenAddr: address(env, "GRPC_LISTEN_ADDR", DEFAULT_LISTEN_ADDR),
      drainSeconds: number(env, "SHUTDOWN_DRAIN_SECONDS", 0.5, 0),
      graceSeconds: number(env, "SHUTDOWN_GRACE_SECONDS", 10, 0),
      faults: {
        delayMs: integer(env, "FAULT_DELAY_MS", 0, 0),
        errorPercent: number(env, "FAULT_ERROR_PERCENT", 0, 0, 100),
      },
      maxConcurrentRpcs: integer(env, MAX_CONCURRENT_RPCS_VARIABLE, DEFAULT_MAX_CONCURRENT_RPCS, 0),
      faultsFile: meshFile(env, FAULTS_FILE_VARIABLE),
      metricsAddress: optionalAddress(env, METRICS_ADDRESS_VARIABLE),
      healthProbeAddress: optionalAddress(env, HEALTH_PROBE_ADDRESS_VARIABLE),
    },
    dbPath: raw(env, "PAYMENTS_DB_PATH", "payments.db"),
    protoDir: protoDir(env, __dirname),
    logLevel: logLevel(env),
    // The specification's rule: only "true", in any case, disables.
    tracing: (env["OTEL_SDK_DISABLED"] ?? "").trim().toLowerCase() !== "true",
    tracesExporter: tracesExporter(env),
  };
}
