// Reading the environment: defaults, accepted forms, and errors naming the variable.

import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import { ConfigError, loadConfig } from "../src/config";
import { tempDir } from "../testing/helpers";

test("defaults match the Python services' and the compose topology", () => {
  const config = loadConfig({});
  assert.deepEqual(config.server, {
    listenAddr: "0.0.0.0:50054",
    drainSeconds: 0.5,
    graceSeconds: 10,
    faults: { delayMs: 0, errorPercent: 0 },
    maxConcurrentRpcs: 1000,
  });
  assert.equal(config.dbPath, "payments.db");
  assert.equal(config.logLevel, "INFO");
  assert.equal(config.tracing, true);
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
  });
  assert.equal(config.server.listenAddr, "[::1]:0");
  assert.equal(config.dbPath, "/data/payments.db");
  assert.equal(config.server.drainSeconds, 0);
  assert.equal(config.server.graceSeconds, 2.5);
  assert.deepEqual(config.server.faults, { delayMs: 250, errorPercent: 12.5 });
  assert.equal(config.logLevel, "WARNING");
  assert.equal(config.tracing, false);
  assert.equal(loadConfig({ PAYMENTS_DB_PATH: "  " }).dbPath, "payments.db");
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
    [{ PAYMENTS_PROTO_DIR: "/nonexistent" }, "PAYMENTS_PROTO_DIR"],
  ];
  for (const [env, variable] of cases) {
    assert.throws(
      () => loadConfig(env),
      (error: unknown) => error instanceof ConfigError && error.message.startsWith(variable),
      variable,
    );
  }
});

test("PAYMENTS_PROTO_DIR points at another copy of the contracts", (t) => {
  const dir = tempDir(t);
  mkdirSync(path.join(dir, "shop", "payments", "v1"), { recursive: true });
  writeFileSync(path.join(dir, "shop", "payments", "v1", "payments.proto"), "");
  assert.equal(loadConfig({ PAYMENTS_PROTO_DIR: dir }).protoDir, dir);
});
