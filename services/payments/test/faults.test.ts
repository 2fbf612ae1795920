// MESH_FAULTS_FILE: the rules switched while the server runs. First the rule
// lookup and the reload on a stepped clock (no network), then the whole
// round on a real server: the file appears, changes, breaks and goes, and the
// calls follow it without a restart; a control server without the variable
// ignores the same file.

import assert from "node:assert/strict";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import * as path from "node:path";
import { test, type TestContext } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { configureLogging, type Fields, type Logger } from "../src/logging";
import { Faults, type FaultsOptions } from "../src/faults";
import { build, type PaymentsServer } from "../src/server";
import { chargeRequest, connect, rejection, tempDir, testConfig } from "../testing/helpers";

const LIMIT = { timeout: 60_000 };
const METHODS = ["Charge", "Refund", "GetPayment", "ResolveCharge"];
const CHARGE = "/shop.payments.v1.PaymentsService/Charge";
const GET = "/shop.payments.v1.PaymentsService/GetPayment";
const NO_FAULTS = { delayMs: 0, errorPercent: 0 };

/** Faults for payments; `options` add to or override the defaults. */
function faultsOf(options: Partial<FaultsOptions>): Faults {
  return new Faults({ env: NO_FAULTS, file: null, service: "payments", methods: METHODS, ...options });
}

configureLogging("ERROR", () => undefined);

interface Line {
  readonly level: string;
  readonly message: string;
}

function recorder(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (message: string, _fields?: Fields) => void lines.push({ level, message });
  const logger = { debug: at("DEBUG"), info: at("INFO"), warning: at("WARNING"), error: at("ERROR") };
  return { lines, logger };
}

/** Writes `text` as a writer should: to a temporary file renamed into place. */
function replace(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

test("a method's rule wins over '*', which wins over the environment's; health and reflection never", (t) => {
  const file = path.join(tempDir(t), "faults.yaml");
  replace(file, 'faults: {payments: {"*": {delay_ms: 5}, Charge: {error_ratio: 1, error_code: INTERNAL}}}');
  const faults = faultsOf({ env: { delayMs: 7, errorPercent: 50 }, file, logger: recorder().logger });
  assert.deepEqual(faults.ruleFor(CHARGE), { delayMs: 0, errorRatio: 1, errorCode: grpc.status.INTERNAL });
  assert.deepEqual(faults.ruleFor(GET), { delayMs: 5, errorRatio: 0, errorCode: grpc.status.UNAVAILABLE });
  assert.equal(faults.ruleFor("/grpc.health.v1.Health/Check"), null);
  assert.equal(faults.ruleFor("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), null);

  const envOnly = faultsOf({ env: { delayMs: 7, errorPercent: 50 } });
  assert.deepEqual(envOnly.ruleFor(GET), { delayMs: 7, errorRatio: 0.5, errorCode: grpc.status.UNAVAILABLE });
  assert.equal(faultsOf({}).ruleFor(GET), null);
  // Another identity's entry is not this service's.
  const asOrders = faultsOf({ file, service: "orders", methods: ["CreateOrder"], logger: recorder().logger });
  assert.equal(asOrders.ruleFor("/shop.orders.v1.OrdersService/CreateOrder"), null);
});

test("the file is looked at once a second at most; changes apply, a bad file keeps the rules, a missing one clears them", (t) => {
  const file = path.join(tempDir(t), "faults.yaml");
  let now = 0;
  const { logger, lines } = recorder();
  const faults = faultsOf({ env: { delayMs: 9, errorPercent: 0 }, file, logger, now: () => now });
  const env = { delayMs: 9, errorRatio: 0, errorCode: grpc.status.UNAVAILABLE };
  const absent = `fault file ${file} does not exist (yet): no fault rules from it`;
  assert.deepEqual(lines, [{ level: "INFO", message: absent }]);
  assert.deepEqual(faults.ruleFor(GET), env);

  replace(file, "faults:\n  payments:\n    GetPayment: {delay_ms: 1}\n    Refund: {delay_ms: 2}\n");
  now = 999;
  assert.deepEqual(faults.ruleFor(GET), env, "looked at again before a second passed");
  now = 1000;
  assert.deepEqual(faults.ruleFor(GET), { delayMs: 1, errorRatio: 0, errorCode: grpc.status.UNAVAILABLE });
  assert.deepEqual(lines.at(-1), { level: "INFO", message: `fault rules from ${file}: 2 for payments` });

  // Broken: one warning naming the file and the problem, the rules kept, and
  // no second warning while the file stays as it is.
  replace(file, "faults:\n  payments:\n    GetPayment: {delay_ms: -5}\n");
  now = 2000;
  assert.equal(faults.ruleFor(GET)?.delayMs, 1);
  now = 3000;
  assert.equal(faults.ruleFor(GET)?.delayMs, 1);
  const warnings = lines.filter((line) => line.level === "WARNING");
  assert.deepEqual(warnings, [
    {
      level: "WARNING",
      message:
        `fault file ${file} not applied, keeping the 2 rule(s) in force: ` +
        `${file}:3: faults.payments.GetPayment.delay_ms: must be at least 0, got -5`,
    },
  ]);

  // Written in place, not renamed: the size and time tell the change.
  writeFileSync(file, "faults: {payments: {GetPayment: {delay_ms: 3}}}\n");
  now = 4000;
  assert.equal(faults.ruleFor(GET)?.delayMs, 3);

  rmSync(file);
  now = 5000;
  assert.deepEqual(faults.ruleFor(GET), env);
  now = 6000;
  faults.ruleFor(GET);
  assert.deepEqual(
    lines.filter((line) => line.message.endsWith("no fault rules from it")).map((line) => line.message),
    [absent, `fault file ${file} is gone: no fault rules from it`],
  );
});

test("a bad file at start is a warning, not a failure", (t) => {
  const file = path.join(tempDir(t), "faults.yaml");
  replace(file, "faults: [");
  const { logger, lines } = recorder();
  const faults = faultsOf({ file, logger });
  assert.equal(faults.ruleFor(GET), null);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.level, "WARNING");
  assert.match(lines[0]?.message ?? "", new RegExp(`^fault file ${file} not applied.*${file}:1: \\(document\\): not valid YAML`));
});

/** Runs `attempt` until it returns true, every 100 ms, for at most 10 s; false when it never did. */
async function eventually(attempt: () => Promise<boolean>): Promise<boolean> {
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline) {
    if (await attempt()) {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

async function start(t: TestContext, faultsFile: string | null, lines: string[]): Promise<PaymentsServer> {
  configureLogging("INFO", (line) => void lines.push(line));
  t.after(() => configureLogging("ERROR", () => undefined));
  const payments = await build(testConfig(tempDir(t), { faultsFile }));
  t.after(() => {
    payments.server.forceShutdown();
    payments.store.close();
  });
  return payments;
}

test("switched at run time: the file appears, changes, breaks and goes, without a restart", LIMIT, async (t) => {
  const file = path.join(tempDir(t), "faults.yaml");
  const lines: string[] = [];
  const payments = await start(t, file, lines);
  const client = connect(payments.port);
  const health = healthCheck(t, payments.port);
  t.after(() => client.close());
  const { payment } = await client.charge(chargeRequest({ idempotencyKey: "faults-1" }));
  assert.ok(payment);
  const get = (): Promise<unknown> => client.getPayment(payment.id);
  await get();

  // GetPayment fails with the file's code and the usual message; Charge and health do not.
  writeFileSync(file, "faults:\n  payments:\n    GetPayment: {error_ratio: 1, error_code: RESOURCE_EXHAUSTED}\n");
  assert.ok(
    await eventually(async () => {
      const error = await get().then(() => null, (failure: grpc.ServiceError) => failure);
      return error !== null;
    }),
    "GetPayment never failed",
  );
  const error = await rejection(get());
  assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.equal(error.details, "injected fault in /shop.payments.v1.PaymentsService/GetPayment");
  assert.equal((await client.charge(chargeRequest({ idempotencyKey: "faults-1" }))).payment?.id, payment.id);
  assert.equal(await health(), "SERVING");
  assert.ok(lines.some((line) => line.includes(`"fault rules from ${file}: 1 for payments"`)), lines.join(""));

  // Every method delayed: slower than 150 ms (a loose bound; the rule says 200).
  const timed = async (): Promise<number> => {
    const began = performance.now();
    await get();
    return performance.now() - began;
  };
  writeFileSync(file, 'faults:\n  payments:\n    "*": {delay_ms: 200}\n');
  assert.ok(await eventually(async () => (await timed().catch(() => 0)) >= 150), "calls never slowed down");
  assert.ok((await timed()) >= 150);

  // Broken: a warning (the file is looked at when a call comes), and the delay stays.
  writeFileSync(file, 'faults:\n  payments:\n    "*": {delay_ms: lots}\n');
  const warned = (): boolean => lines.some((line) => line.includes('"level":"WARNING"') && line.includes(file));
  assert.ok(await eventually(async () => (await timed()) >= 0 && warned()), "no warning about the broken file");
  assert.ok((await timed()) >= 150, "the previous rules were dropped");
  assert.equal(await health(), "SERVING");

  // Gone: calls are OK and quick again.
  rmSync(file);
  assert.ok(await eventually(async () => (await timed()) < 100), "calls stayed slow after the file went");
  assert.ok(lines.some((line) => line.includes(`"fault file ${file} is gone: no fault rules from it"`)));
});

test("control: without MESH_FAULTS_FILE the same file changes nothing", LIMIT, async (t) => {
  const file = path.join(tempDir(t), "faults.yaml");
  const payments = await start(t, null, []);
  const client = connect(payments.port);
  t.after(() => client.close());
  writeFileSync(file, "faults:\n  payments:\n    GetPayment: {error_ratio: 1, error_code: RESOURCE_EXHAUSTED}\n");
  await new Promise((resolve) => setTimeout(resolve, 2500));
  assert.equal((await rejection(client.getPayment("pay_none"))).code, grpc.status.NOT_FOUND);
});

/** A health check function for a plaintext server. */
function healthCheck(t: TestContext, port: number): () => Promise<string> {
  const health = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.after(() => health.close());
  return () =>
    new Promise((resolve, reject) =>
      health.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        () => Buffer.alloc(0),
        (bytes: Buffer) => bytes,
        {},
        (error: grpc.ServiceError | null, response?: Buffer) =>
          error === null ? resolve(response?.[1] === 1 ? "SERVING" : `status ${response?.[1]}`) : reject(error),
      ),
    );
}
