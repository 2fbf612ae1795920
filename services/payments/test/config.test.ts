// Reading the environment: defaults, accepted forms, and errors naming the variable.

import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import { ConfigError, loadConfig, REPO_ROOT } from "../src/config";
import { tempDir } from "../testing/helpers";

test("defaults match the Python services' and the compose topology", () => {
  const config = loadConfig({});
  assert.deepEqual(config.server, {
    listenAddr: "0.0.0.0:50054",
    drainSeconds: 0.5,
    graceSeconds: 10,
    faults: { delayMs: 0, errorPercent: 0 },
    maxConcurrentRpcs: 1000,
    faultsFile: null,
    metricsAddress: null,
    healthProbeAddress: null,
  });
  assert.equal(config.dbPath, "payments.db");
  assert.equal(config.logLevel, "INFO");
  assert.equal(config.tracing, true);
  assert.equal(config.tracesExporter, "otlp");
  assert.ok(config.protoDir.endsWith(`${path.sep}protos`), config.protoDir);
});

test("values are read and trimmed; empty counts as unset", () => {
  const config = loadConfig({
    GRPC_LISTEN_ADDR: " [::1]:0 ",
    PAYMENTS_DB_PATH: "/data/payments.db",
    SHUTDOWN_DRAIN_SECONDS: "0",
    SHUTDOWN_GRACE_SECONDS: "2.5",
    FAULT_DELAY_MS: "250",
    FAULT_ERROR_PERCENT: "12.5",
    LOG_LEVEL: "warn",
    OTEL_SDK_DISABLED: "TRUE",
    OTEL_TRACES_EXPORTER: " None ",
  });
  assert.equal(config.server.listenAddr, "[::1]:0");
  assert.equal(config.dbPath, "/data/payments.db");
  assert.equal(config.server.drainSeconds, 0);
  assert.equal(config.server.graceSeconds, 2.5);
  assert.deepEqual(config.server.faults, { delayMs: 250, errorPercent: 12.5 });
  assert.equal(config.logLevel, "WARNING");
  assert.equal(config.tracing, false);
  assert.equal(config.tracesExporter, "none");
  assert.equal(loadConfig({ PAYMENTS_DB_PATH: "  " }).dbPath, "payments.db");
  assert.equal(loadConfig({ OTEL_TRACES_EXPORTER: "  " }).tracesExporter, "otlp");
  assert.equal(loadConfig({ OTEL_SDK_DISABLED: "false" }).tracing, true);
});

test("malformed values raise ConfigError naming the variable", () => {
  const cases: [Record<string, string>, string][] = [
    [{ GRPC_LISTEN_ADDR: "localhost" }, "GRPC_LISTEN_ADDR"],
    [{ GRPC_LISTEN_ADDR: ":50054" }, "GRPC_LISTEN_ADDR"],
    [{ GRPC_LISTEN_ADDR: "host:99999" }, "GRPC_LISTEN_ADDR"],
    [{ SHUTDOWN_DRAIN_SECONDS: "-1" }, "SHUTDOWN_DRAIN_SECONDS"],
    [{ SHUTDOWN_GRACE_SECONDS: "0x10" }, "SHUTDOWN_GRACE_SECONDS"],
    [{ SHUTDOWN_GRACE_SECONDS: "Infinity" }, "SHUTDOWN_GRACE_SECONDS"],
    [{ FAULT_DELAY_MS: "1.5" }, "FAULT_DELAY_MS"],
    [{ FAULT_ERROR_PERCENT: "100.1" }, "FAULT_ERROR_PERCENT"],
    [{ FAULT_ERROR_PERCENT: "-3" }, "FAULT_ERROR_PERCENT"],
    [{ LOG_LEVEL: "TRACE" }, "LOG_LEVEL"],
    [{ OTEL_TRACES_EXPORTER: "zipkin" }, "OTEL_TRACES_EXPORTER"],
    [{ OTEL_TRACES_EXPORTER: "console" }, "OTEL_TRACES_EXPORTER"],
    [{ OTEL_TRACES_EXPORTER: "otlp,none" }, "OTEL_TRACES_EXPORTER"],
    [{ PAYMENTS_PROTO_DIR: "/nonexistent" }, "PAYMENTS_PROTO_DIR"],
    [{ MESH_METRICS_ADDRESS: "9464" }, "MESH_METRICS_ADDRESS"],
    [{ MESH_METRICS_ADDRESS: ":9464" }, "MESH_METRICS_ADDRESS"],
    [{ MESH_METRICS_ADDRESS: "0.0.0.0:http" }, "MESH_METRICS_ADDRESS"],
    [{ MESH_METRICS_ADDRESS: "0.0.0.0:70000" }, "MESH_METRICS_ADDRESS"],
    [{ MESH_HEALTH_PROBE_ADDRESS: "8086" }, "MESH_HEALTH_PROBE_ADDRESS"],
    [{ MESH_HEALTH_PROBE_ADDRESS: ":8086" }, "MESH_HEALTH_PROBE_ADDRESS"],
    [{ MESH_HEALTH_PROBE_ADDRESS: "0.0.0.0:" }, "MESH_HEALTH_PROBE_ADDRESS"],
    [{ MESH_HEALTH_PROBE_ADDRESS: "0.0.0.0:grpc" }, "MESH_HEALTH_PROBE_ADDRESS"],
    [{ MESH_HEALTH_PROBE_ADDRESS: "0.0.0.0:70000" }, "MESH_HEALTH_PROBE_ADDRESS"],
  ];
  for (const [env, variable] of cases) {
    assert.throws(
      () => loadConfig(env),
      (error: unknown) => error instanceof ConfigError && error.message.startsWith(variable),
      variable,
    );
  }
});

test("OTEL_TRACES_EXPORTER is otlp or none in any case; another is refused as Python refuses it", () => {
  assert.equal(loadConfig({ OTEL_TRACES_EXPORTER: "otlp" }).tracesExporter, "otlp");
  assert.equal(loadConfig({ OTEL_TRACES_EXPORTER: " OTLP " }).tracesExporter, "otlp");
  assert.equal(loadConfig({ OTEL_TRACES_EXPORTER: "none" }).tracesExporter, "none");
  assert.equal(loadConfig({ OTEL_TRACES_EXPORTER: "NONE" }).tracesExporter, "none");
  assert.throws(() => loadConfig({ OTEL_TRACES_EXPORTER: " Zipkin " }), {
    name: "ConfigError",
    message: "OTEL_TRACES_EXPORTER must be one of otlp, none, got 'zipkin'",
  });
});

test("PAYMENTS_PROTO_DIR points at another copy of the contracts", (t) => {
  const dir = tempDir(t);
  mkdirSync(path.join(dir, "shop", "payments", "v1"), { recursive: true });
  writeFileSync(path.join(dir, "shop", "payments", "v1", "payments.proto"), "");
  assert.equal(loadConfig({ PAYMENTS_PROTO_DIR: dir }).protoDir, dir);
});

test("MESH_FAULTS_FILE is resolved from the repository root; MESH_METRICS_ADDRESS is kept as given", () => {
  const config = loadConfig({ MESH_FAULTS_FILE: " deploy/faults.yaml ", MESH_METRICS_ADDRESS: " 0.0.0.0:9464 " });
  assert.equal(config.server.faultsFile, path.join(REPO_ROOT, "deploy", "faults.yaml"));
  assert.equal(config.server.metricsAddress, "0.0.0.0:9464");
  assert.equal(loadConfig({ MESH_FAULTS_FILE: "/tmp/faults.yaml" }).server.faultsFile, "/tmp/faults.yaml");
  assert.equal(loadConfig({ MESH_FAULTS_FILE: " ", MESH_METRICS_ADDRESS: "" }).server.faultsFile, null);
  assert.equal(loadConfig({ MESH_METRICS_ADDRESS: "" }).server.metricsAddress, null);
});

test("MESH_HEALTH_PROBE_ADDRESS is kept as given; unset or empty, there is no probe listener", () => {
  assert.equal(loadConfig({ MESH_HEALTH_PROBE_ADDRESS: " 0.0.0.0:8086 " }).server.healthProbeAddress, "0.0.0.0:8086");
  assert.equal(loadConfig({ MESH_HEALTH_PROBE_ADDRESS: "[::]:0" }).server.healthProbeAddress, "[::]:0");
  assert.equal(loadConfig({}).server.healthProbeAddress, null);
  assert.equal(loadConfig({ MESH_HEALTH_PROBE_ADDRESS: "  " }).server.healthProbeAddress, null);
});
