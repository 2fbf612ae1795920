// A call whose deadline passes, or whose caller cancels it, stops at once:
// the injected delay ends early, no charge is made after the caller gave up,
// and one INFO "call cancelled" line says so. Against a real server on port 0
// with a long injected delay; bounds stay loose (the machine is noisy).

import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";

import * as grpc from "@grpc/grpc-js";

import { Payments, type PaymentsApi } from "../src/domain";
import { configureLogging } from "../src/logging";
import { build, type PaymentsServer } from "../src/server";
import { chargeRequest, connect, rejection, tempDir, testConfig } from "../testing/helpers";

// A test that goes wrong must fail, not hang.
const LIMIT = { timeout: 30_000 };

const CHARGE = "/shop.payments.v1.PaymentsService/Charge";
/** Long enough that a charge made after it would be plain, short enough for a quick test. */
const LONG_DELAY_MS = 3000;

interface LogLine {
  readonly level: string;
  readonly message: string;
  readonly [field: string]: unknown;
}

/** Every log line written from now to the end of the test, parsed. */
function captureLogs(t: { after(fn: () => void): void }): LogLine[] {
  const lines: LogLine[] = [];
  configureLogging("DEBUG", (line) => lines.push(JSON.parse(line) as LogLine));
  t.after(() => configureLogging("ERROR"));
  return lines;
}

/** Resolves with the first line `matches` accepts, polling; rejects after `withinMs`. */
async function lineWhere(lines: LogLine[], matches: (line: LogLine) => boolean, withinMs: number): Promise<LogLine> {
  const until = Date.now() + withinMs;
  for (;;) {
    const found = lines.find(matches);
    if (found !== undefined) {
      return found;
    }
    if (Date.now() > until) {
      throw new Error(`no such log line within ${withinMs} ms; got: ${lines.map((l) => l.message).join(" | ")}`);
    }
    await delay(10);
  }
}

const cancelled = (line: LogLine): boolean => line.message === "call cancelled";

/** A server with `delayMs` injected into every call, whose domain counts the charges it is asked for. */
async function serverWithDelay(
  t: { after(fn: () => void): void },
  delayMs: number,
): Promise<{ payments: PaymentsServer; charges: () => number }> {
  let charges = 0;
  let domain: PaymentsApi | undefined;
  const inner = (): PaymentsApi => {
    assert.ok(domain, "a call arrived before the server was built");
    return domain;
  };
  const api: PaymentsApi = {
    charge: (request) => {
      charges += 1;
      return inner().charge(request);
    },
    refund: (request) => inner().refund(request),
    getPayment: (id) => inner().getPayment(id),
    resolveCharge: (key) => inner().resolveCharge(key),
  };
  const payments = await build(testConfig(tempDir(t), { faults: { delayMs, errorPercent: 0 } }), { api });
  domain = new Payments(payments.store);
  t.after(() => {
    payments.server.forceShutdown();
    payments.store.close();
  });
  return { payments, charges: () => charges };
}

test("a Charge whose deadline passes mid-delay is never made, and its cancellation is logged", LIMIT, async (t) => {
  const lines = captureLogs(t);
  const { payments, charges } = await serverWithDelay(t, LONG_DELAY_MS);
  const client = connect(payments.port);
  t.after(() => client.close());

  const key = "deadline-key";
  const started = Date.now();
  const error = await rejection(
    new Promise((resolve, reject) =>
      client.raw.charge(
        chargeRequest({ idempotencyKey: key }),
        new grpc.Metadata(),
        { deadline: Date.now() + 300 },
        (err, response) => (err === null ? resolve(response) : reject(err)),
      ),
    ),
  );
  assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED);

  const line = await lineWhere(lines, cancelled, LONG_DELAY_MS);
  const seenAfterMs = Date.now() - started;
  assert.ok(seenAfterMs < LONG_DELAY_MS - 500, `cancellation logged only after ${seenAfterMs} ms`);
  assert.equal(line.level, "INFO");
  assert.equal(line["method"], CHARGE);
  assert.equal(line["deadline_passed"], true);
  assert.equal(typeof line["after_ms"], "number");
  assert.ok((line["after_ms"] as number) < LONG_DELAY_MS - 500, `after_ms ${String(line["after_ms"])}`);

  // Past the end of the delay, the charge has still not been made.
  await delay(Math.max(0, started + LONG_DELAY_MS + 500 - Date.now()));
  assert.equal(charges(), 0, "the domain was asked to charge after the caller gave up");
  assert.equal(payments.store.findKey(key), undefined, "a payment was stored for the abandoned charge");
  assert.equal(lines.filter(cancelled).length, 1, "one line per cancelled call");
  assert.deepEqual(
    lines.filter((l) => l.level === "ERROR").map((l) => l.message),
    [],
    "errors logged for a cancelled call",
  );
});

test("a Charge the client cancels mid-delay is never made, and its cancellation is logged", LIMIT, async (t) => {
  const lines = captureLogs(t);
  const { payments, charges } = await serverWithDelay(t, LONG_DELAY_MS);
  const client = connect(payments.port);
  t.after(() => client.close());

  const key = "cancel-key";
  const started = Date.now();
  let call: grpc.ClientUnaryCall | undefined;
  const answered = new Promise((resolve, reject) => {
    call = client.raw.charge(chargeRequest({ idempotencyKey: key }), (err, response) =>
      err === null ? resolve(response) : reject(err),
    );
  });
  // Cancelled once the server is in the delay, not before the call reached it.
  await lineWhere(lines, (l) => l.message === "call started" && l["method"] === CHARGE, LONG_DELAY_MS);
  await delay(100);
  call?.cancel();
  const error = await rejection(answered);
  assert.equal(error.code, grpc.status.CANCELLED);

  const line = await lineWhere(lines, cancelled, LONG_DELAY_MS);
  const seenAfterMs = Date.now() - started;
  assert.ok(seenAfterMs < LONG_DELAY_MS - 500, `cancellation logged only after ${seenAfterMs} ms`);
  assert.equal(line.level, "INFO");
  assert.equal(line["method"], CHARGE);
  assert.equal(line["deadline_passed"], false);
  assert.ok((line["after_ms"] as number) < LONG_DELAY_MS - 500, `after_ms ${String(line["after_ms"])}`);

  await delay(Math.max(0, started + LONG_DELAY_MS + 500 - Date.now()));
  assert.equal(charges(), 0, "the domain was asked to charge after the caller gave up");
  assert.equal(payments.store.findKey(key), undefined, "a payment was stored for the abandoned charge");
  assert.equal(lines.filter(cancelled).length, 1, "one line per cancelled call");
});

// The control: the same server, store and checks see a charge that is made,
// so the tests above would fail were the abandoned charge made after all.
test("a Charge without a deadline runs through a short delay and is stored", LIMIT, async (t) => {
  const lines = captureLogs(t);
  const { payments, charges } = await serverWithDelay(t, 200);
  const client = connect(payments.port);
  t.after(() => client.close());

  const key = "control-key";
  const response = await client.charge(chargeRequest({ idempotencyKey: key }));
  assert.ok(response.payment?.id.startsWith("pay_"));
  assert.equal(charges(), 1);
  assert.equal(payments.store.findKey(key)?.paymentId, response.payment?.id);
  // grpc-js emits 'cancelled' after every status it sends; a completed call is not logged as cancelled.
  await delay(100);
  assert.deepEqual(lines.filter(cancelled), []);
});

test("a call with a deadline it meets completes and is not logged as cancelled", LIMIT, async (t) => {
  const lines = captureLogs(t);
  const { payments } = await serverWithDelay(t, 200);
  const client = connect(payments.port);
  t.after(() => client.close());

  const response = await new Promise<unknown>((resolve, reject) =>
    client.raw.charge(
      chargeRequest({ idempotencyKey: "in-time-key" }),
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (err, answer) => (err === null ? resolve(answer) : reject(err)),
    ),
  );
  assert.ok(response);
  await delay(100);
  assert.deepEqual(lines.filter(cancelled), []);
});
