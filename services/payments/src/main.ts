// Entry point, wiring only: config, logging, telemetry, server, signals.
//
// Run from the repository root:
//   node services/payments/dist/services/payments/src/main.js
//
// Exit status: 0 after a graceful stop on SIGTERM/SIGINT; 2 with one line
// "configuration error: ..." naming the variable; 1 with one line
// "cannot start: ..." when a port (gRPC, MESH_METRICS_ADDRESS's or
// MESH_HEALTH_PROBE_ADDRESS's) cannot be bound or the database opened.

import { ConfigError, loadConfig, METRICS_ADDRESS_VARIABLE, type PaymentsConfig } from "./config";
import { configureLogging, log } from "./logging";
import { loadMeshSecurity, type MeshSecurity } from "./tls";
// Types only: these modules load @grpc/grpc-js, which must be required after
// telemetry has installed its hook (see telemetry.ts), so they are required
// below, at run time, in that order.
import type * as ServerModule from "./server";
import type * as TelemetryModule from "./telemetry";

const TELEMETRY_SHUTDOWN_MS = 5000;

function fail(line: string, status: number): number {
  process.stderr.write(`${line}\n`);
  return status;
}

function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let received: NodeJS.Signals | undefined;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (received === undefined) {
        received = signal;
        resolve(signal);
      } else {
        // Keep the handler: a second signal must not kill the process midway
        // through shutdown; the grace period bounds how long it takes.
        log.info(`received ${signal} again: already shutting down`);
      }
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}

async function run(config: PaymentsConfig, security: MeshSecurity): Promise<number> {
  let telemetry: TelemetryModule.Telemetry | undefined;
  if (config.tracing) {
    const { startTelemetry } = require("./telemetry") as typeof TelemetryModule;
    telemetry = startTelemetry({ tracesExporter: config.tracesExporter });
  }
  const { build, shutDown, StartError } = require("./server") as typeof ServerModule;

  let payments: ServerModule.PaymentsServer;
  try {
    payments = await build(config, { security });
  } catch (error) {
    await telemetry?.shutdown(TELEMETRY_SHUTDOWN_MS);
    if (error instanceof StartError) {
      return fail(`cannot start: ${error.message}`, 1);
    }
    if (error instanceof ConfigError) {
      // The certificate files exist but do not make a usable pair.
      return fail(`configuration error: ${error.message}`, 2);
    }
    throw error;
  }
  const stop = untilSignal();
  log.info(`serving on port ${payments.port}`, { tracing: config.tracing });

  const signal = await stop;
  const { drainSeconds, graceSeconds } = config.server;
  log.info(`received ${signal}: shutting down (drain ${drainSeconds}s, grace ${graceSeconds}s)`);
  await shutDown(payments, config.server);
  await telemetry?.shutdown(TELEMETRY_SHUTDOWN_MS);
  log.info("stopped");
  return 0;
}

async function main(): Promise<number> {
  let config: PaymentsConfig;
  let security: MeshSecurity;
  try {
    config = loadConfig();
    // MESH_*: mTLS, the certificates and the authorization policy (tls.ts).
    security = loadMeshSecurity();
  } catch (error) {
    if (error instanceof ConfigError) {
      return fail(`configuration error: ${error.message}`, 2);
    }
    throw error;
  }
  configureLogging(config.logLevel);
  const metricsAddress = config.server.metricsAddress;
  if (!config.tracing && metricsAddress) {
    // OTEL_SDK_DISABLED turns the whole SDK off, metrics too, as in Python.
    log.warning(`${METRICS_ADDRESS_VARIABLE}=${metricsAddress} ignored: OTEL_SDK_DISABLED=true`);
    config = { ...config, server: { ...config.server, metricsAddress: null } };
  }
  return run(config, security);
}

// Anything unexpected is still one JSON log line (stack in "exception"), not
// Node's multi-line dump, and a failing exit status.
process.on("uncaughtException", (error) => {
  log.error("uncaught exception", error);
  process.exit(1);
});

main().then(
  (status) => process.exit(status),
  (error: unknown) => {
    log.error("payments stopped by an unexpected error", error);
    process.exit(1);
  },
);
