// GRPC_MAX_CONCURRENT_RPCS: past the limit of calls in flight, a call of any
// shape ends at once with RESOURCE_EXHAUSTED naming the limit, the calls
// already accepted complete, health is never shed, and a place is given back
// when a call ends in any way (answered, streamed to its end, cancelled).

import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";

import * as grpc from "@grpc/grpc-js";
import { HealthImplementation, service as healthService } from "grpc-health-check";

import { ConfigError, loadConfig } from "../src/config";
import { Payments, type PaymentsApi } from "../src/domain";
import { configureLogging, type Logger } from "../src/logging";
import { ConcurrencyLimit, GuardedServer } from "../src/guards";
import { build, type PaymentsServer } from "../src/server";
import { SqlitePaymentStore } from "../src/store";
import { chargeInput, connect, jsonMethod, rejection, tempDir, testConfig } from "../testing/helpers";

// A test that goes wrong must fail, not hang.
const LIMIT = { timeout: 30_000 };
const SERVICE = "test.limit.v1.Shapes";
const BUSY = (limit: number): string =>
  `server busy: ${limit} calls in flight, the limit (GRPC_MAX_CONCURRENT_RPCS)`;

configureLogging("ERROR", () => undefined);

const method = (name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<unknown, unknown> =>
  jsonMethod(SERVICE, name, requestStream, responseStream);

const SHAPES = {
  hold: method("Hold", false, false),
  unary: method("Unary", false, false),
  clientStream: method("ClientStream", true, false),
  serverStream: method("ServerStream", false, true),
  bidi: method("Bidi", true, true),
};

type ShapesClient = grpc.Client & Record<keyof typeof SHAPES, (...args: unknown[]) => unknown>;
type HealthClient = grpc.Client & {
  check(request: { service: string }, callback: (error: grpc.ServiceError | null, response: { status: string }) => void): void;
};

/** A gate the Hold handler waits at: `entered` resolves once it is reached. */
class Gate {
  private open: () => void = () => undefined;
  readonly opened = new Promise<void>((resolve) => (this.open = resolve));
  private reached: () => void = () => undefined;
  readonly entered = new Promise<void>((resolve) => (this.reached = resolve));
  enter(): Promise<void> {
    this.reached();
    return this.opened;
  }
  release(): void {
    this.open();
  }
}

async function bind(t: TestContext, server: grpc.Server): Promise<number> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error === null ? resolve(bound) : reject(error),
    ),
  );
  t.after(() => server.forceShutdown());
  return port;
}

async function startShapes(t: TestContext, limit: ConcurrencyLimit, gate: Gate): Promise<number> {
  const server = new GuardedServer([limit]);
  const implementation: grpc.UntypedServiceImplementation = {
    hold: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      void gate.enter().then(() => callback(null, { held: true }));
    },
    unary: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      callback(null, { ok: true });
    },
    clientStream: (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      call.on("data", () => undefined);
      call.on("end", () => callback(null, { ok: true }));
    },
    serverStream: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      call.write({ ok: true });
      call.end();
    },
    bidi: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
      call.on("data", (message: unknown) => call.write(message));
      call.on("end", () => call.end());
    },
  };
  server.addService(SHAPES, implementation);
  new HealthImplementation({ "": "SERVING" }).addToServer(server);
  return bind(t, server);
}

function unaryCall(client: ShapesClient, name: "hold" | "unary"): Promise<unknown> {
  return new Promise((resolve, reject) =>
    client[name]({ n: 1 }, (error: grpc.ServiceError | null, value: unknown) => (error ? reject(error) : resolve(value))),
  );
}

const OTHER_SHAPES = ["unary", "clientStream", "serverStream", "bidi"] as const;

/** Calls one shape; resolves with what came back, rejects with the status. */
function callShape(client: ShapesClient, shape: (typeof OTHER_SHAPES)[number]): Promise<unknown> {
  const collect = (call: grpc.ClientReadableStream<unknown>): Promise<unknown[]> =>
    new Promise((resolve, reject) => {
      const received: unknown[] = [];
      call.on("data", (message: unknown) => received.push(message));
      call.on("error", reject);
      call.on("end", () => resolve(received));
    });
  switch (shape) {
    case "unary":
      return unaryCall(client, "unary");
    case "clientStream":
      return new Promise((resolve, reject) => {
        const call = client.clientStream((error: grpc.ServiceError | null, value: unknown) =>
          error ? reject(error) : resolve(value),
        ) as grpc.ClientWritableStream<unknown>;
        call.write({ n: 1 });
        call.end();
      });
    case "serverStream":
      return collect(client.serverStream({ n: 1 }) as grpc.ClientReadableStream<unknown>);
    case "bidi": {
      const duplex = client.bidi() as grpc.ClientDuplexStream<unknown, unknown>;
      const received = collect(duplex);
      duplex.write({ n: 1 });
      duplex.end();
      return received;
    }
  }
}

function health(port: number): HealthClient {
  const Client = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as HealthClient;
}

function check(client: HealthClient): Promise<string> {
  return new Promise((resolve, reject) =>
    client.check({ service: "" }, (error, response) => (error === null ? resolve(response.status) : reject(error))),
  );
}

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, "timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test("past the limit every shape is shed at once, health is not, and the held call completes", LIMIT, async (t) => {
  const gate = new Gate();
  const limit = new ConcurrencyLimit(1);
  const port = await startShapes(t, limit, gate);
  const Client = grpc.makeGenericClientConstructor(SHAPES, "Shapes");
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as ShapesClient;
  const probe = health(port);
  t.after(() => {
    client.close();
    probe.close();
  });

  const held = unaryCall(client, "hold");
  await gate.entered;
  // Each rejection is handled at once: the calls run together.
  const shed = OTHER_SHAPES.map((shape) => [shape, rejection(callShape(client, shape))] as const);
  for (const [shape, failed] of shed) {
    const error = await failed;
    assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED, `${shape}: ${error.message}`);
    assert.equal(error.details, BUSY(1), shape);
  }
  assert.equal(limit.shed, 4);
  assert.equal(await check(probe), "SERVING");

  gate.release();
  assert.deepEqual(await held, { held: true });
  // Every shape got its place back when it ended: each now runs, one at a time.
  for (const shape of OTHER_SHAPES) {
    await assert.doesNotReject(callShape(client, shape), shape);
    await until(() => limit.inFlight === 0);
  }
  assert.equal(limit.inFlight, 0);
});

test("a call cancelled by its client gives its place back", LIMIT, async (t) => {
  const gate = new Gate();
  const limit = new ConcurrencyLimit(1);
  const port = await startShapes(t, limit, gate);
  const Client = grpc.makeGenericClientConstructor(SHAPES, "Shapes");
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as ShapesClient;
  t.after(() => client.close());

  const call = client.hold({ n: 1 }, () => undefined) as grpc.ClientUnaryCall;
  await gate.entered;
  assert.equal(limit.inFlight, 1);
  call.cancel();
  await until(() => limit.inFlight === 0);
  assert.deepEqual(await unaryCall(client, "unary"), { ok: true });
  gate.release();
});

test("an overload writes one WARNING line per interval, not one per shed call", () => {
  const lines: [string, unknown][] = [];
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warning: (message, fields) => lines.push([message, fields]),
    error: () => undefined,
  };
  let now = 0;
  const limit = new ConcurrencyLimit(1, logger, () => now);
  const inner: grpc.handleUnaryCall<unknown, unknown> = () => undefined; // never answers: holds its place
  const guarded = limit.guard(`/${SERVICE}/Unary`, "unary", inner as grpc.UntypedHandleCall) as grpc.handleUnaryCall<
    unknown,
    unknown
  >;
  const call = { once: () => undefined } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
  const codes: (number | undefined)[] = [];
  const callback = ((error: grpc.ServiceError | null) => codes.push(error?.code)) as grpc.sendUnaryData<unknown>;
  guarded(call, callback); // admitted
  for (let i = 0; i < 100; i++) {
    guarded(call, callback);
  }
  assert.equal(codes.length, 100);
  assert.ok(codes.every((code) => code === grpc.status.RESOURCE_EXHAUSTED));
  assert.equal(lines.length, 1);
  now += ConcurrencyLimit.LOG_INTERVAL_MS;
  guarded(call, callback);
  assert.equal(lines.length, 2);
  assert.deepEqual(lines[1]?.[1], {
    limit: 1,
    variable: "GRPC_MAX_CONCURRENT_RPCS",
    shed_since_last_line: 100,
    method: `/${SERVICE}/Unary`,
  });
});

test("GRPC_MAX_CONCURRENT_RPCS is a count, 1000 by default, 0 for no limit", () => {
  assert.equal(loadConfig({}).server.maxConcurrentRpcs, 1000);
  assert.equal(loadConfig({ GRPC_MAX_CONCURRENT_RPCS: " 50 " }).server.maxConcurrentRpcs, 50);
  assert.equal(loadConfig({ GRPC_MAX_CONCURRENT_RPCS: "0" }).server.maxConcurrentRpcs, 0);
  for (const bad of ["-1", "many", "2.5", "1e3", "99999999999999999999"]) {
    assert.throws(
      () => loadConfig({ GRPC_MAX_CONCURRENT_RPCS: bad }),
      (error: unknown) => error instanceof ConfigError && error.message.startsWith("GRPC_MAX_CONCURRENT_RPCS "),
      bad,
    );
  }
  assert.throws(() => new ConcurrencyLimit(0), RangeError);
});

/** The payments domain with GetPayment parked at `gate`. */
function gatedApi(t: TestContext, gate: Gate): { api: PaymentsApi; id: string } {
  const store = SqlitePaymentStore.open(`${tempDir(t)}/api.db`);
  t.after(() => store.close());
  const payments = new Payments(store);
  const charged = payments.charge(chargeInput()) as Awaited<ReturnType<Payments["charge"]>>;
  const api: PaymentsApi = {
    charge: (request) => payments.charge(request),
    refund: (request) => payments.refund(request),
    resolveCharge: (key) => payments.resolveCharge(key),
    getPayment: async (id) => {
      await gate.enter();
      return payments.getPayment(id);
    },
  };
  return { api, id: charged.id };
}

function stop(payments: PaymentsServer): void {
  payments.server.forceShutdown();
  payments.store.close();
}

test("build() limits the payments server as configured", LIMIT, async (t) => {
  const gate = new Gate();
  const { api, id } = gatedApi(t, gate);
  const payments = await build(testConfig(tempDir(t), { maxConcurrentRpcs: 1 }), { api });
  const client = connect(payments.port);
  const probe = health(payments.port);
  t.after(() => {
    client.close();
    probe.close();
    stop(payments);
  });
  assert.equal(payments.limit?.limit, 1);

  const held = client.getPayment(id);
  await gate.entered;
  const error = await rejection(client.getPayment(id));
  assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.equal(error.details, BUSY(1));
  assert.equal(await check(probe), "SERVING");
  gate.release();
  assert.equal((await held).payment?.id, id);
  assert.equal((await client.getPayment(id)).payment?.id, id);
});

test("build() with GRPC_MAX_CONCURRENT_RPCS=0 has no limit", LIMIT, async (t) => {
  const payments = await build(testConfig(tempDir(t), { maxConcurrentRpcs: 0 }));
  t.after(() => stop(payments));
  assert.equal(payments.limit, null);
  assert.ok(!(payments.server instanceof GuardedServer));
});
