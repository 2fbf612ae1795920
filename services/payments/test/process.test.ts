// The compiled entry point as a process: exit statuses and their one-line
// messages, JSON logs, and a graceful stop on SIGTERM that lets a call in
// flight finish, with and without a reachable trace collector; the health
// probe listener (MESH_HEALTH_PROBE_ADDRESS) through a stop.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

import { loadConfig } from "../src/config";
import { chargeRequest, connect, tempDir } from "../testing/helpers";
import { makeCerts, mtls, secureClient } from "../testing/mesh";
import { parseMetrics, scrape, valueOf } from "../testing/prometheus";

const MAIN = path.join(__dirname, "..", "src", "main.js");
const REPO_ROOT = path.dirname(loadConfig({}).protoDir);

interface Running {
  readonly child: ChildProcess;
  /** Resolves with the first stderr line for which `predicate` is true. */
  waitFor(predicate: (line: string) => boolean): Promise<string>;
  readonly lines: string[];
  readonly exit: Promise<number | null>;
}

type Context = { after(fn: () => void): void };

// A test that goes wrong must fail, not hang: every test has a timeout and
// every process it starts is killed when it ends.
const LIMIT = { timeout: 30_000 };

function start(t: Context, env: Record<string, string>): Running {
  const child = spawn(process.execPath, [MAIN], {
    cwd: REPO_ROOT,
    // mTLS off unless a test turns it on, whatever MTLS_DEFAULT says.
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", MESH_MTLS: "off", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  t.after(() => child.kill("SIGKILL"));
  const lines: string[] = [];
  const waiters: { predicate: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => {
    lines.push(line);
    for (const waiter of waiters.filter((w) => w.predicate(line))) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(line);
    }
  });
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    child,
    lines,
    exit,
    waitFor: (predicate) =>
      new Promise((resolve, reject) => {
        const seen = lines.find(predicate);
        if (seen !== undefined) {
          resolve(seen);
          return;
        }
        waiters.push({ predicate, resolve });
        void exit.then((code) => reject(new Error(`exited with ${code} first; stderr:\n${lines.join("\n")}`)));
      }),
  };
}

async function run(t: Context, env: Record<string, string>): Promise<{ code: number | null; lines: string[] }> {
  const process = start(t, env);
  const code = await process.exit;
  // Let readline deliver the last lines.
  await new Promise((resolve) => setImmediate(resolve));
  return { code, lines: process.lines };
}

function message(line: string): string {
  return (JSON.parse(line) as { message: string }).message;
}

test("a malformed variable exits 2 with one line naming it", LIMIT, async (t) => {
  const db = path.join(tempDir(t), "p.db");
  const cases: [Record<string, string>, string][] = [
    [{ GRPC_LISTEN_ADDR: "no-port" }, "GRPC_LISTEN_ADDR"],
    [{ FAULT_ERROR_PERCENT: "150" }, "FAULT_ERROR_PERCENT"],
    [{ FAULT_DELAY_MS: "-1" }, "FAULT_DELAY_MS"],
    [{ SHUTDOWN_GRACE_SECONDS: "soon" }, "SHUTDOWN_GRACE_SECONDS"],
    [{ LOG_LEVEL: "chatty" }, "LOG_LEVEL"],
    [{ MESH_MTLS: "maybe" }, "MESH_MTLS"],
    [{ MESH_MTLS: "on", MESH_SERVICE_IDENTITY: "billing" }, "MESH_SERVICE_IDENTITY"],
    // "MESH_MTLS is on but <dir>/ca.pem is missing (MESH_CERTS_DIR=<dir>; ...)"
    [{ MESH_MTLS: "on", MESH_CERTS_DIR: path.join(tempDir(t), "none") }, "MESH_CERTS_DIR"],
    [{ MESH_METRICS_ADDRESS: "9464" }, "MESH_METRICS_ADDRESS"],
    [{ MESH_HEALTH_PROBE_ADDRESS: "0.0.0.0" }, "MESH_HEALTH_PROBE_ADDRESS"],
    [{ MESH_HEALTH_PROBE_ADDRESS: "0.0.0.0:probe" }, "MESH_HEALTH_PROBE_ADDRESS"],
    [{ OTEL_TRACES_EXPORTER: "zipkin" }, "OTEL_TRACES_EXPORTER"],
  ];
  for (const [env, variable] of cases) {
    // Loopback and port 0 even here: should a check regress, the process
    // must not listen on a public address or on the real port.
    const base = { GRPC_LISTEN_ADDR: "127.0.0.1:0", PAYMENTS_DB_PATH: db, OTEL_SDK_DISABLED: "true" };
    const { code, lines } = await run(t, { ...base, ...env });
    assert.equal(code, 2, variable);
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0] ?? "", new RegExp(`^configuration error: .*${variable}`));
  }
});

test("a port in use exits 1 with one 'cannot start' line", LIMIT, async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  t.after(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const { code, lines } = await run(t, {
    GRPC_LISTEN_ADDR: `127.0.0.1:${port}`,
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
  });
  assert.equal(code, 1);
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0] ?? "", new RegExp(`^cannot start: cannot listen on 127\\.0\\.0\\.1:${port}: `));
});

/** Starts the service, charges with a call held in flight by FAULT_DELAY_MS, then sends SIGTERM. */
async function stopDuringCall(t: Context, env: Record<string, string>): Promise<void> {
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    LOG_LEVEL: "DEBUG",
    FAULT_DELAY_MS: "1500",
    SHUTDOWN_DRAIN_SECONDS: "0.1",
    ...env,
  });
  const serving = await service.waitFor((line) => line.includes('"serving on port'));
  const port = Number(/serving on port (\d+)/.exec(serving)?.[1]);
  const client = connect(port);
  t.after(() => client.close());

  const inFlight = client.charge(chargeRequest({ idempotencyKey: "sigterm" }));
  await service.waitFor((line) => message(line) === "call started");
  service.child.kill("SIGTERM");
  const response = await inFlight;
  assert.ok(response.payment?.id.startsWith("pay_"), "the call in flight did not complete");
  assert.equal(await service.exit, 0);
  await new Promise((resolve) => setImmediate(resolve));

  const records = service.lines.map((line) => JSON.parse(line) as Record<string, string>);
  for (const record of records) {
    assert.deepEqual(Object.keys(record).slice(0, 4), ["time", "level", "message", "service"]);
    assert.equal(record["service"], "payments");
  }
  const messages = records.map((record) => record["message"]);
  assert.ok(messages.includes("fault injection on"), messages.join(" | "));
  assert.ok(messages.some((m) => m?.startsWith("received SIGTERM")), messages.join(" | "));
  assert.equal(messages.at(-1), "stopped");
}

test("SIGTERM lets a call in flight finish OK, then exits 0 (tracing off)", LIMIT, async (t) => {
  await stopDuringCall(t, { OTEL_SDK_DISABLED: "true" });
});

test("SIGTERM exits 0 even when the trace collector never answers", LIMIT, async (t) => {
  // A collector that accepts connections and then says nothing: exporting
  // would wait out its own timeouts, the bounded shutdown does not.
  const sockets: net.Socket[] = [];
  const silent = net.createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    sockets.forEach((socket) => socket.destroy());
    silent.close();
  });
  const port = (silent.address() as net.AddressInfo).port;
  await stopDuringCall(t, {
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
    OTEL_EXPORTER_OTLP_INSECURE: "true",
  });
});

test("an OTEL_TRACES_EXPORTER not installed exits 2 with Python's message", LIMIT, async (t) => {
  const { code, lines } = await run(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_TRACES_EXPORTER: " Zipkin ",
  });
  assert.equal(code, 2);
  assert.deepEqual(lines, ["configuration error: OTEL_TRACES_EXPORTER must be one of otlp, none, got 'zipkin'"]);
});

/** Serves one traced call with OTEL_TRACES_EXPORTER=`exporter`, stops, and counts the collector's connections. */
async function collectorConnections(t: Context, exporter: string): Promise<number> {
  // Each connection is counted and dropped at once, so an exporter that
  // tries gives up quickly instead of waiting out the bounded shutdown.
  let connections = 0;
  const collector = net.createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  t.after(() => collector.close());
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_TRACES_EXPORTER: exporter,
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as net.AddressInfo).port}`,
    OTEL_EXPORTER_OTLP_INSECURE: "true",
  });
  const port = Number(/serving on port (\d+)/.exec(await service.waitFor((l) => l.includes("serving on port")))?.[1]);
  const client = connect(port);
  t.after(() => client.close());
  await client.charge(chargeRequest({ idempotencyKey: `exporter-${exporter}` }));
  service.child.kill("SIGTERM");
  assert.equal(await service.exit, 0, service.lines.join("\n"));
  return connections;
}

test("OTEL_TRACES_EXPORTER=none sends nothing to the collector that otlp reaches", LIMIT, async (t) => {
  // otlp first: it shows the collector would have seen an exporter.
  assert.ok((await collectorConnections(t, "otlp")) > 0, "the otlp exporter never connected");
  assert.equal(await collectorConnections(t, "none"), 0);
});

test("the entry point serves calls once it logs its port and stops on SIGINT", LIMIT, async (t) => {
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_SDK_DISABLED: "true",
  });
  const port = Number(/serving on port (\d+)/.exec(await service.waitFor((l) => l.includes("serving on port")))?.[1]);
  const client = connect(port);
  t.after(() => client.close());
  const error = await new Promise<grpc.ServiceError>((resolve) =>
    client.raw.getPayment({ id: "pay_none" }, (e) => resolve(e as grpc.ServiceError)),
  );
  assert.equal(error.code, grpc.status.NOT_FOUND);
  service.child.kill("SIGINT");
  assert.equal(await service.exit, 0);
});

test("with MESH_MTLS=on the entry point serves mTLS and enforces the policy", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_SDK_DISABLED: "true",
    MESH_MTLS: "on",
    MESH_CERTS_DIR: certs.dir,
  });
  const port = Number(/serving on port (\d+)/.exec(await service.waitFor((l) => l.includes("serving on port")))?.[1]);
  assert.ok(service.lines.some((line) => message(line).startsWith("mTLS on: serving as payments")));
  const orders = secureClient(t, port, mtls(certs, "orders"));
  assert.equal(await orders.health(), "SERVING");
  await orders.charge(chargeRequest({ idempotencyKey: "process-mtls" }));
  const error = await orders.getPayment("pay_none").then(
    () => assert.fail("GetPayment was allowed"),
    (e: grpc.ServiceError) => e,
  );
  assert.equal(error.code, grpc.status.PERMISSION_DENIED);
  service.child.kill("SIGTERM");
  assert.equal(await service.exit, 0);
});

test("with MESH_MTLS off the entry point says so", LIMIT, async (t) => {
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_SDK_DISABLED: "true",
  });
  await service.waitFor((l) => l.includes("serving on port"));
  assert.ok(service.lines.some((line) => message(line).startsWith("mTLS is off")), service.lines.join("\n"));
  service.child.kill("SIGTERM");
  assert.equal(await service.exit, 0);
});

test("a metrics port in use exits 1 with one 'cannot start' line naming MESH_METRICS_ADDRESS", LIMIT, async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  t.after(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const { code, lines } = await run(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    MESH_METRICS_ADDRESS: `127.0.0.1:${port}`,
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9",
  });
  assert.equal(code, 1);
  assert.equal(lines.filter((line) => line.startsWith("cannot start")).length, 1, lines.join("\n"));
  assert.match(lines.at(-1) ?? "", new RegExp(`^cannot start: cannot listen on MESH_METRICS_ADDRESS=127\\.0\\.0\\.1:${port}: `));
});

test("with tracing on, the entry point's /metrics counts each call once, and the fault file applies", LIMIT, async (t) => {
  const dir = tempDir(t);
  const faults = path.join(dir, "faults.yaml");
  writeFileSync(faults, "faults:\n  payments:\n    Refund: {error_ratio: 1, error_code: INTERNAL}\n");
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(dir, "p.db"),
    MESH_METRICS_ADDRESS: "127.0.0.1:0",
    MESH_FAULTS_FILE: faults,
    // Tracing on, its exporter aimed where nothing listens: the spans are
    // not the point, the gRPC instrumentation being loaded is.
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9",
    OTEL_EXPORTER_OTLP_INSECURE: "true",
  });
  const metricsLine = await service.waitFor((line) => line.includes("metrics for Prometheus at"));
  const metricsPort = Number(/:(\d+)\/metrics/.exec(metricsLine)?.[1]);
  const port = Number(/serving on port (\d+)/.exec(await service.waitFor((l) => l.includes("serving on port")))?.[1]);
  assert.ok(service.lines.some((line) => message(line) === `fault rules from ${faults}: 1 for payments`));
  const client = connect(port);
  t.after(() => client.close());
  await client.charge(chargeRequest({ idempotencyKey: "process-metrics" }));
  const refund = await client.refund({ idempotencyKey: "r-1", paymentId: "pay_x", reason: "" }).then(
    () => assert.fail("Refund was not faulted"),
    (e: grpc.ServiceError) => e,
  );
  assert.equal(refund.code, grpc.status.INTERNAL);
  assert.equal(refund.details, "injected fault in /shop.payments.v1.PaymentsService/Refund");
  const all = parseMetrics(await scrape(metricsPort));
  const count = (method: string, code: string): number =>
    valueOf(all, "rpc_server_call_duration_seconds_count", { rpc_method: method, rpc_grpc_status_code: code });
  assert.equal(count("Charge", "OK"), 1);
  assert.equal(count("Refund", "INTERNAL"), 1);
  service.child.kill("SIGTERM");
  assert.equal(await service.exit, 0);
});

test("OTEL_SDK_DISABLED=true turns the metrics off too, with a warning", LIMIT, async (t) => {
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    MESH_METRICS_ADDRESS: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_SDK_DISABLED: "true",
  });
  await service.waitFor((l) => l.includes("serving on port"));
  const messages = service.lines.map(message);
  assert.ok(messages.includes("MESH_METRICS_ADDRESS=127.0.0.1:0 ignored: OTEL_SDK_DISABLED=true"), messages.join("\n"));
  assert.ok(!messages.some((m) => m.startsWith("metrics for Prometheus")), messages.join("\n"));
  service.child.kill("SIGTERM");
  assert.equal(await service.exit, 0);
});

test("a health probe port in use exits 1 with one 'cannot start' line naming MESH_HEALTH_PROBE_ADDRESS", LIMIT, async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  t.after(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const { code, lines } = await run(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    MESH_HEALTH_PROBE_ADDRESS: `127.0.0.1:${port}`,
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_SDK_DISABLED: "true",
  });
  assert.equal(code, 1);
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0] ?? "", new RegExp(`^cannot start: cannot listen on MESH_HEALTH_PROBE_ADDRESS=127\\.0\\.0\\.1:${port}: `));
});

test("with MESH_MTLS=on, the health probe port answers plaintext: SERVING, then NOT_SERVING through the drain", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const service = start(t, {
    GRPC_LISTEN_ADDR: "127.0.0.1:0",
    MESH_HEALTH_PROBE_ADDRESS: "127.0.0.1:0",
    PAYMENTS_DB_PATH: path.join(tempDir(t), "p.db"),
    OTEL_SDK_DISABLED: "true",
    MESH_MTLS: "on",
    MESH_CERTS_DIR: certs.dir,
    SHUTDOWN_DRAIN_SECONDS: "2",
  });
  const probeLine = await service.waitFor((line) => message(line).startsWith("health probe at "));
  const probePort = Number(/^health probe at 127\.0\.0\.1:(\d+):/.exec(message(probeLine))?.[1]);
  await service.waitFor((line) => line.includes("serving on port"));
  const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  const probe = new Health(`127.0.0.1:${probePort}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check(request: { service: string }, callback: (error: grpc.ServiceError | null, response: { status: string }) => void): void;
  };
  t.after(() => probe.close());
  const check = (): Promise<string> =>
    new Promise((resolve, reject) =>
      probe.check({ service: "" }, (error, response) => (error === null ? resolve(response.status) : reject(error))),
    );
  assert.equal(await check(), "SERVING");
  service.child.kill("SIGTERM");
  await service.waitFor((line) => message(line).startsWith("draining for"));
  assert.equal(await check(), "NOT_SERVING");
  assert.equal(await service.exit, 0);
});
