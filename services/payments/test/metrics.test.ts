// MESH_METRICS_ADDRESS: after a known number of calls, GET /metrics holds
// exactly those counts per method, code and caller, in Prometheus' names;
// shed, cancelled and timed-out calls count with their code, the injected
// delay is inside the duration, and retry attempts are counted from the
// header gRPC's client retry sends.

import assert from "node:assert/strict";
import { createServer, get } from "node:http";
import { test, type TestContext } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { PaymentsServiceClient } from "../../../gen/ts/shop/payments/v1/payments";
import type { ServerConfig } from "../src/config";
import { configureLogging } from "../src/logging";
import { DURATION_BUCKETS, PREVIOUS_ATTEMPTS_HEADER } from "../src/metrics";
import { build, type PaymentsServer, SERVICE_FULL_NAME, StartError } from "../src/server";
import { chargeRequest, connect, rejection, tempDir, testConfig } from "../testing/helpers";
import { makeCerts, mtls, secureClient, startSecure } from "../testing/mesh";
import { parseMetrics, type Sample, scrape, select, valueOf } from "../testing/prometheus";

const LIMIT = { timeout: 60_000 };
const DURATION = "rpc_server_call_duration_seconds";
const COUNT = `${DURATION}_count`;
const RETRIES = "rpc_server_retry_attempts_total";

configureLogging("ERROR", () => undefined);

async function start(t: TestContext, server: Partial<ServerConfig> = {}): Promise<PaymentsServer> {
  const payments = await build(testConfig(tempDir(t), { metricsAddress: "127.0.0.1:0", ...server }));
  t.after(async () => {
    payments.server.forceShutdown();
    payments.store.close();
    await payments.metrics?.close();
  });
  assert.ok(payments.metrics !== null);
  return payments;
}

async function samples(payments: PaymentsServer): Promise<Sample[]> {
  assert.ok(payments.metrics !== null);
  return parseMetrics(await scrape(payments.metrics.port));
}

function count(all: Sample[], method: string, code: string, caller = "unknown"): number {
  return valueOf(all, COUNT, {
    rpc_service: SERVICE_FULL_NAME,
    rpc_method: method,
    rpc_grpc_status_code: code,
    mesh_caller: caller,
  });
}

/** Scrapes until `done` holds (a status reached after the call ended in the client), for at most 10 s. */
async function scrapeUntil(payments: PaymentsServer, done: (all: Sample[]) => boolean): Promise<Sample[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const all = await samples(payments);
    if (done(all) || Date.now() > deadline) {
      return all;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("counts per method and code, with the histogram's buckets, sum and resource", LIMIT, async (t) => {
  const payments = await start(t);
  const client = connect(payments.port);
  t.after(() => client.close());
  for (const key of ["m-1", "m-2", "m-3"]) {
    await client.charge(chargeRequest({ idempotencyKey: key }));
  }
  for (let i = 0; i < 2; i += 1) {
    assert.equal((await rejection(client.getPayment("pay_missing"))).code, grpc.status.NOT_FOUND);
  }
  const text = await scrape(payments.metrics!.port);
  const all = parseMetrics(text);
  assert.equal(count(all, "Charge", "OK"), 3, text);
  assert.equal(count(all, "GetPayment", "NOT_FOUND"), 2, text);
  assert.equal(count(all, "GetPayment", "OK"), 0);
  // Only those two series of the payments service: nothing counted twice.
  const series = select(all, COUNT, { rpc_service: SERVICE_FULL_NAME });
  assert.deepEqual(
    series.map((sample) => `${sample.labels["rpc_method"]} ${sample.labels["rpc_grpc_status_code"]} ${sample.value}`).sort(),
    ["Charge OK 3", "GetPayment NOT_FOUND 2"],
  );
  // The explicit boundaries, cumulative, ending at +Inf with the count.
  const buckets = select(all, `${DURATION}_bucket`, { rpc_method: "Charge", rpc_grpc_status_code: "OK" });
  assert.deepEqual(
    buckets.map((sample) => sample.labels["le"]),
    [...DURATION_BUCKETS.map(String), "+Inf"],
  );
  assert.equal(buckets.at(-1)?.value, 3);
  const sum = valueOf(all, `${DURATION}_sum`, { rpc_method: "Charge", rpc_grpc_status_code: "OK" });
  assert.ok(sum > 0 && sum < 30, `sum ${sum}`);
  assert.match(text, /# UNIT rpc_server_call_duration_seconds s/);
  assert.match(text, /target_info\{[^}]*service_name="payments"/);
  assert.equal(valueOf(all, RETRIES, { rpc_method: "Charge" }), 0);
});

test("health is counted too, a cancelled stream as CANCELLED; the listener answers /metrics only", LIMIT, async (t) => {
  const payments = await start(t);
  const health = new grpc.Client(`127.0.0.1:${payments.port}`, grpc.credentials.createInsecure());
  t.after(() => health.close());
  await new Promise<void>((resolve, reject) =>
    health.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      () => Buffer.alloc(0),
      (bytes: Buffer) => bytes,
      {},
      (error: grpc.ServiceError | null) => (error === null ? resolve() : reject(error)),
    ),
  );
  // A Watch stream never ends by itself: cancelled by its client, it counts
  // as CANCELLED though no handler ever sent a status.
  const watch = health.makeServerStreamRequest(
    "/grpc.health.v1.Health/Watch",
    () => Buffer.alloc(0),
    (bytes: Buffer) => bytes,
    {},
  );
  watch.on("error", () => undefined);
  await new Promise((resolve) => watch.once("data", resolve));
  watch.cancel();
  const all = await scrapeUntil(
    payments,
    (samples) => valueOf(samples, COUNT, { rpc_method: "Watch", rpc_grpc_status_code: "CANCELLED" }) === 1,
  );
  assert.equal(
    valueOf(all, COUNT, { rpc_service: "grpc.health.v1.Health", rpc_method: "Check", rpc_grpc_status_code: "OK" }),
    1,
  );
  assert.equal(
    valueOf(all, COUNT, { rpc_service: "grpc.health.v1.Health", rpc_method: "Watch", rpc_grpc_status_code: "CANCELLED" }),
    1,
  );
  const port = payments.metrics!.port;
  const notFound = await new Promise<number>((resolve, reject) =>
    get({ host: "127.0.0.1", port, path: "/other" }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    }).on("error", reject),
  );
  assert.equal(notFound, 404);
});

test("shed, cancelled and timed-out calls count with their code; the delay is in the duration", LIMIT, async (t) => {
  const payments = await start(t, { faults: { delayMs: 5000, errorPercent: 0 }, maxConcurrentRpcs: 1 });
  const client = connect(payments.port);
  t.after(() => client.close());
  // One call held by the injected delay takes the only place...
  const held = client.raw.getPayment({ id: "pay_held" }, () => undefined);
  await scrapeUntil(payments, () => payments.limit?.inFlight === 1);
  assert.equal(payments.limit?.inFlight, 1);
  // ...so the next is shed at once,
  const shed = await rejection(client.getPayment("pay_shed"));
  assert.equal(shed.code, grpc.status.RESOURCE_EXHAUSTED);
  // and the held one, cancelled, counts as CANCELLED.
  held.cancel();
  let all = await scrapeUntil(payments, (samples) => count(samples, "GetPayment", "CANCELLED") === 1);
  assert.equal(count(all, "GetPayment", "RESOURCE_EXHAUSTED"), 1);
  assert.equal(count(all, "GetPayment", "CANCELLED"), 1);

  // A deadline passing during the delay: DEADLINE_EXCEEDED, and the
  // duration covers the time waited (a lower bound only: the machine is noisy).
  const timedOut = await new Promise<grpc.ServiceError>((resolve) =>
    client.raw.getPayment({ id: "pay_slow" }, new grpc.Metadata(), { deadline: Date.now() + 300 }, (error) =>
      resolve(error as grpc.ServiceError),
    ),
  );
  assert.equal(timedOut.code, grpc.status.DEADLINE_EXCEEDED);
  all = await scrapeUntil(payments, (samples) => count(samples, "GetPayment", "DEADLINE_EXCEEDED") === 1);
  assert.equal(count(all, "GetPayment", "DEADLINE_EXCEEDED"), 1);
  const waited = valueOf(all, `${DURATION}_sum`, {
    rpc_method: "GetPayment",
    rpc_grpc_status_code: "DEADLINE_EXCEEDED",
  });
  assert.ok(waited >= 0.25, `a call past a 300 ms deadline lasted ${waited} s`);
});

test("the injected delay is inside an OK call's duration", LIMIT, async (t) => {
  const payments = await start(t, { faults: { delayMs: 200, errorPercent: 0 } });
  const client = connect(payments.port);
  t.after(() => client.close());
  await client.charge(chargeRequest({ idempotencyKey: "slow-1" }));
  await client.charge(chargeRequest({ idempotencyKey: "slow-2" }));
  const all = await samples(payments);
  assert.equal(count(all, "Charge", "OK"), 2);
  const sum = valueOf(all, `${DURATION}_sum`, { rpc_method: "Charge", rpc_grpc_status_code: "OK" });
  assert.ok(sum >= 0.4, `two calls delayed 200 ms each lasted ${sum} s in all`);
  // Nothing in the buckets below the delay.
  assert.equal(valueOf(all, `${DURATION}_bucket`, { rpc_method: "Charge", le: "0.1" }), 0);
});

test("retry attempts: the client's retries (gRPC A6) and the header alone are counted", LIMIT, async (t) => {
  const payments = await start(t, { faults: { delayMs: 0, errorPercent: 100 } });
  const serviceConfig = {
    methodConfig: [
      {
        name: [{ service: SERVICE_FULL_NAME, method: "GetPayment" }],
        retryPolicy: {
          maxAttempts: 3,
          initialBackoff: "0.01s",
          maxBackoff: "0.05s",
          backoffMultiplier: 2,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ],
  };
  const retrying = new PaymentsServiceClient(`127.0.0.1:${payments.port}`, grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify(serviceConfig),
  });
  t.after(() => retrying.close());
  const failed = await new Promise<grpc.ServiceError>((resolve) =>
    retrying.getPayment({ id: "pay_1" }, (error) => resolve(error as grpc.ServiceError)),
  );
  assert.equal(failed.code, grpc.status.UNAVAILABLE);
  let all = await samples(payments);
  // Three attempts reached the server, the last two as retries.
  assert.equal(count(all, "GetPayment", "UNAVAILABLE"), 3);
  assert.equal(valueOf(all, RETRIES, { rpc_method: "GetPayment", mesh_caller: "unknown" }), 2);

  // The header alone, as another language's client sends it: counted too.
  const client = connect(payments.port);
  t.after(() => client.close());
  const metadata = new grpc.Metadata();
  metadata.set(PREVIOUS_ATTEMPTS_HEADER, "1");
  await new Promise((resolve) => client.raw.refund({ idempotencyKey: "r", paymentId: "p", reason: "" }, metadata, resolve));
  all = await samples(payments);
  assert.equal(valueOf(all, RETRIES, { rpc_method: "Refund", rpc_service: SERVICE_FULL_NAME }), 1);
  assert.equal(count(all, "Refund", "UNAVAILABLE"), 1);
});

test("with mTLS the caller is the client's mesh identity, denied calls included", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const payments = await startSecure(t, certs, {}, undefined, { metricsAddress: "127.0.0.1:0" });
  const orders = secureClient(t, payments.port, mtls(certs, "orders"));
  const catalog = secureClient(t, payments.port, mtls(certs, "catalog"));
  await orders.charge(chargeRequest({ idempotencyKey: "tls-1" }));
  await orders.charge(chargeRequest({ idempotencyKey: "tls-2" }));
  // Not granted by the policy: orders may not GetPayment, catalog may not Charge.
  assert.equal((await rejection(orders.getPayment("pay_x"))).code, grpc.status.PERMISSION_DENIED);
  assert.equal((await rejection(catalog.charge(chargeRequest({ idempotencyKey: "tls-3" })))).code, grpc.status.PERMISSION_DENIED);
  assert.equal(await catalog.health(), "SERVING");
  const all = await samples(payments);
  assert.equal(count(all, "Charge", "OK", "orders"), 2);
  assert.equal(count(all, "GetPayment", "PERMISSION_DENIED", "orders"), 1);
  assert.equal(count(all, "Charge", "PERMISSION_DENIED", "catalog"), 1);
  assert.equal(valueOf(all, COUNT, { rpc_method: "Check", rpc_grpc_status_code: "OK", mesh_caller: "catalog" }), 1);
  assert.equal(select(all, COUNT, { mesh_caller: "unknown" }).length, 0);
});

test("metrics are off without MESH_METRICS_ADDRESS, and a taken port stops the start naming it", LIMIT, async (t) => {
  const off = await build(testConfig(tempDir(t)));
  t.after(() => {
    off.server.forceShutdown();
    off.store.close();
  });
  assert.equal(off.metrics, null);

  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  t.after(() => taken.close());
  const address = taken.address();
  assert.ok(typeof address === "object" && address !== null);
  const error: unknown = await rejection(build(testConfig(tempDir(t), { metricsAddress: `127.0.0.1:${address.port}` })));
  assert.ok(error instanceof StartError, String(error));
  assert.match(error.message, new RegExp(`^cannot listen on MESH_METRICS_ADDRESS=127\\.0\\.0\\.1:${address.port}: .*EADDRINUSE`));
});
