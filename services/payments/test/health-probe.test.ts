// MESH_HEALTH_PROBE_ADDRESS: the plaintext listener for the kubelet's `grpc:`
// probe. It answers health from the main server's own state (SERVING, then
// NOT_SERVING through the drain and the grace period), serves nothing else,
// answers in plaintext while the main port takes only mTLS, and stops once
// the main server has. Real listeners on 127.0.0.1, ports picked by the system.

import assert from "node:assert/strict";
import * as net from "node:net";
import * as path from "node:path";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

import { HEALTH_PROBE_ADDRESS_VARIABLE, type ServerConfig } from "../src/config";
import { configureLogging } from "../src/logging";
import { build, type PaymentsServer, SERVICE_FULL_NAME, shutDown, StartError } from "../src/server";
import { chargeRequest, connect, rejection, tempDir, testConfig } from "../testing/helpers";
import { makeCerts, mtls, secureClient, startSecure } from "../testing/mesh";

type Context = { after(fn: () => void): void };
type Callback<T> = (error: grpc.ServiceError | null, response: T) => void;

interface HealthClient extends grpc.Client {
  check(request: { service: string }, callback: Callback<{ status: string }>): void;
  watch(request: { service: string }): grpc.ClientReadableStream<{ status: string }>;
}

// A test that goes wrong must fail, not hang.
const LIMIT = { timeout: 30_000 };
const PROBE_ON = { healthProbeAddress: "127.0.0.1:0" };

// The servers' start lines are not what these tests are about.
configureLogging("ERROR");

function healthClient(t: Context, port: number): HealthClient {
  const Client = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as HealthClient;
  t.after(() => client.close());
  return client;
}

function check(client: HealthClient, service = ""): Promise<string> {
  return new Promise((resolve, reject) =>
    client.check({ service }, (error, response) => (error === null ? resolve(response.status) : reject(error))),
  );
}

/** A plaintext server with the probe listener, both stopped when the test ends (shutDown may have stopped them first). */
async function start(t: Context, server: Partial<ServerConfig> = {}): Promise<PaymentsServer> {
  const payments = await build(testConfig(tempDir(t), { ...PROBE_ON, ...server }));
  t.after(() => {
    payments.server.forceShutdown();
    payments.healthProbe?.server.forceShutdown();
    payments.store.close();
  });
  return payments;
}

function probePort(payments: PaymentsServer): number {
  assert.ok(payments.healthProbe, "no health probe listener");
  return payments.healthProbe.port;
}

test("the probe port answers SERVING from the main server's health while it serves", LIMIT, async (t) => {
  const payments = await start(t);
  const port = probePort(payments);
  assert.notEqual(port, payments.port);
  const probe = healthClient(t, port);
  assert.equal(await check(probe), "SERVING");
  assert.equal(await check(probe, SERVICE_FULL_NAME), "SERVING");
  // The same state object, not a copy made at start.
  payments.health.setStatus("", "NOT_SERVING");
  assert.equal(await check(probe), "NOT_SERVING");
});

test("the probe port answers NOT_SERVING through the drain, then stops with the server", LIMIT, async (t) => {
  const payments = await start(t);
  const probe = healthClient(t, probePort(payments));
  assert.equal(await check(probe), "SERVING");
  const stopping = shutDown(payments, testConfig("", { drainSeconds: 2, graceSeconds: 5 }).server);
  assert.equal(await check(probe), "NOT_SERVING");
  assert.equal(await check(probe, SERVICE_FULL_NAME), "NOT_SERVING");
  await stopping;
  const refused = await rejection(check(healthClient(t, probePort(payments))));
  assert.equal(refused.code, grpc.status.UNAVAILABLE);
});

test("the probe port outlives the main server's grace period: NOT_SERVING while a call finishes", LIMIT, async (t) => {
  // The injected delay holds the call on the server; the DEBUG "call started"
  // line says when it has arrived, so no timing is assumed.
  let arrived: () => void = () => undefined;
  const started = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  configureLogging("DEBUG", (line) => {
    if ((JSON.parse(line) as { message: string }).message === "call started") {
      arrived();
    }
  });
  t.after(() => configureLogging("ERROR"));
  const payments = await start(t, { faults: { delayMs: 1500, errorPercent: 0 } });
  const client = connect(payments.port);
  t.after(() => client.close());
  const probe = healthClient(t, probePort(payments));

  const inFlight = client.charge(chargeRequest({ idempotencyKey: "probe-in-flight" }));
  await started;
  // With no drain, shutDown has called tryShutdown by the time it returns.
  const stopping = shutDown(payments, testConfig("", { drainSeconds: 0, graceSeconds: 30 }).server);
  assert.equal(await check(probe), "NOT_SERVING");
  const response = await inFlight;
  assert.ok(response.payment?.id.startsWith("pay_"));
  await stopping;
  const refused = await rejection(check(healthClient(t, probePort(payments))));
  assert.equal(refused.code, grpc.status.UNAVAILABLE);
});

test("a Watch on the probe port sees NOT_SERVING and does not hold up the stop", LIMIT, async (t) => {
  const payments = await start(t);
  const probe = healthClient(t, probePort(payments));
  const stream = probe.watch({ service: "" });
  const seen: string[] = [];
  const ended = new Promise<void>((resolve) => {
    stream.on("error", () => resolve());
    stream.on("end", () => resolve());
  });
  let notServing: () => void = () => undefined;
  const turned = new Promise<void>((resolve) => {
    notServing = resolve;
  });
  const first = new Promise<void>((resolve) =>
    stream.on("data", ({ status }: { status: string }) => {
      seen.push(status);
      resolve();
      if (status === "NOT_SERVING") {
        notServing();
      }
    }),
  );
  await first;
  await shutDown(payments, testConfig("", { drainSeconds: 0.2, graceSeconds: 5 }).server);
  await turned;
  await ended;
  assert.deepEqual(seen, ["SERVING", "NOT_SERVING"]);
});

test("the probe port serves health only: payments and reflection are UNIMPLEMENTED", LIMIT, async (t) => {
  const payments = await start(t);
  const port = probePort(payments);
  const client = connect(port);
  t.after(() => client.close());
  const business = await rejection(client.getPayment("pay_1"));
  assert.equal(business.code, grpc.status.UNIMPLEMENTED);
  const charge = await rejection(client.charge(chargeRequest({ idempotencyKey: "probe-charge" })));
  assert.equal(charge.code, grpc.status.UNIMPLEMENTED);

  const raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.after(() => raw.close());
  const reflection = await new Promise<grpc.ServiceError>((resolve) => {
    const stream = raw.makeBidiStreamRequest(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      (value: Buffer) => value,
      (bytes: Buffer) => bytes,
    );
    stream.on("error", resolve);
    stream.on("data", () => undefined);
    stream.end();
  });
  assert.equal(reflection.code, grpc.status.UNIMPLEMENTED);
});

test("with mTLS on, the probe port answers plaintext while the main port refuses it", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const payments = await startSecure(t, certs, {}, undefined, PROBE_ON);
  t.after(() => payments.healthProbe?.server.forceShutdown());
  assert.equal(await check(healthClient(t, probePort(payments))), "SERVING");
  const plaintext = await rejection(check(healthClient(t, payments.port)));
  assert.equal(plaintext.code, grpc.status.UNAVAILABLE);
  assert.equal(await secureClient(t, payments.port, mtls(certs, "orders")).health(), "SERVING");
});

test("unset, there is no probe listener", LIMIT, async (t) => {
  for (const healthProbeAddress of [undefined, null]) {
    const payments = await build(testConfig(tempDir(t), { healthProbeAddress }));
    payments.server.forceShutdown();
    payments.store.close();
    assert.equal(payments.healthProbe, null);
  }
});

test("a probe port that cannot be bound fails the start with an error naming the variable", LIMIT, async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  t.after(() => blocker.close());
  const taken = (blocker.address() as net.AddressInfo).port;
  // The main server on a Unix socket, whose name the test knows without
  // fixing a port, to see that it is released too: it is bound first.
  const socket = path.join(tempDir(t), "main.sock");
  const config = testConfig(tempDir(t), { listenAddr: `unix:${socket}`, healthProbeAddress: `127.0.0.1:${taken}` });
  const error = await build(config).then(
    () => assert.fail("build succeeded"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof StartError, String(error));
  assert.match(error.message, new RegExp(`^cannot listen on ${HEALTH_PROBE_ADDRESS_VARIABLE}=127\\.0\\.0\\.1:${taken}: `));
  const connected = await new Promise<boolean>((resolve) =>
    net
      .connect(socket)
      .once("connect", function (this: net.Socket) {
        this.destroy();
        resolve(true);
      })
      .once("error", () => resolve(false)),
  );
  assert.equal(connected, false, "the main server still listens");
});
