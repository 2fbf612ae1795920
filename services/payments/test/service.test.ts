// The payments service over real gRPC: a server from build() on 127.0.0.1:0
// and the generated grpc-js client. Statuses, the BadRequest detail, INTERNAL
// for unexpected exceptions, and one payment for concurrent retries.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import * as grpc from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import Database from "better-sqlite3";

import { PaymentStatus } from "../../../gen/ts/shop/payments/v1/payments";
import type { PaymentsApi } from "../src/domain";
import { configureLogging } from "../src/logging";
import { TEST_CARDS } from "../src/processor";
import { build, type PaymentsServer } from "../src/server";
import { chargeRequest, type Client, connect, NEXT_YEAR, rejection, tempDir, testConfig } from "../testing/helpers";

interface DecodedStatus {
  code: number;
  message: string;
  details: { typeUrl: string; violations: { field: string; description: string }[] }[];
}

// Decoded here with a plain wire reader, independently of the encoder under test.
function decodeViolations(bytes: Uint8Array): { field: string; description: string }[] {
  const reader = new BinaryReader(bytes);
  const violations: { field: string; description: string }[] = [];
  while (reader.pos < reader.len) {
    const [number, wireType] = reader.tag();
    if (number !== 1) {
      reader.skip(wireType);
      continue;
    }
    const inner = new BinaryReader(reader.bytes());
    const violation = { field: "", description: "" };
    while (inner.pos < inner.len) {
      const [n, w] = inner.tag();
      if (n === 1) violation.field = inner.string();
      else if (n === 2) violation.description = inner.string();
      else inner.skip(w);
    }
    violations.push(violation);
  }
  return violations;
}

function decodeStatus(bytes: Uint8Array): DecodedStatus {
  const reader = new BinaryReader(bytes);
  const status: DecodedStatus = { code: 0, message: "", details: [] };
  while (reader.pos < reader.len) {
    const [number, wireType] = reader.tag();
    if (number === 1) status.code = reader.int32();
    else if (number === 2) status.message = reader.string();
    else if (number === 3) {
      const any = new BinaryReader(reader.bytes());
      const detail = { typeUrl: "", violations: [] as { field: string; description: string }[] };
      while (any.pos < any.len) {
        const [n, w] = any.tag();
        if (n === 1) detail.typeUrl = any.string();
        else if (n === 2) detail.violations = decodeViolations(any.bytes());
        else any.skip(w);
      }
      status.details.push(detail);
    } else reader.skip(wireType);
  }
  return status;
}

function statusDetails(error: grpc.ServiceError): DecodedStatus {
  const values = error.metadata.get("grpc-status-details-bin");
  assert.equal(values.length, 1, "no grpc-status-details-bin trailer");
  return decodeStatus(values[0] as Buffer);
}

describe("PaymentsService over gRPC", () => {
  let dir: string;
  let payments: PaymentsServer;
  let client: Client;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "payments-test-"));
    payments = await build(testConfig(dir));
    client = connect(payments.port);
  });

  after(() => {
    client.close();
    payments.server.forceShutdown();
    payments.store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("Charge, then GetPayment, return the same CHARGED payment", async () => {
    const { payment } = await client.charge(chargeRequest({ idempotencyKey: "svc-1", orderId: "order-9" }));
    assert.ok(payment);
    assert.equal(payment.status, PaymentStatus.PAYMENT_STATUS_CHARGED);
    assert.equal(payment.orderId, "order-9");
    assert.equal(payment.cardLast4, "4242");
    assert.deepEqual(payment.amount, { currencyCode: "EUR", amountMinor: 1234n });
    assert.match(payment.id, /^pay_/);
    assert.ok(payment.createTime instanceof Date);
    const got = await client.getPayment(payment.id);
    assert.deepEqual(got.payment, payment);
  });

  test("a decline is OK with a DECLINED payment and its reason", async () => {
    const request = chargeRequest({ idempotencyKey: "svc-declined" });
    request.card = { ...request.card!, number: TEST_CARDS.insufficientFunds };
    const { payment } = await client.charge(request);
    assert.equal(payment?.status, PaymentStatus.PAYMENT_STATUS_DECLINED);
    assert.equal(payment?.declineReason, "insufficient_funds");
  });

  test("INVALID_ARGUMENT names the field in the message and in a BadRequest detail", async () => {
    const request = chargeRequest({ idempotencyKey: "svc-bad" });
    request.card = { ...request.card!, cvc: "12" };
    const error = await rejection(client.charge(request));
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(error.details, "card.cvc: must be 3 or 4 digits");
    assert.deepEqual(statusDetails(error), {
      code: grpc.status.INVALID_ARGUMENT,
      message: "card.cvc: must be 3 or 4 digits",
      details: [
        {
          typeUrl: "type.googleapis.com/google.rpc.BadRequest",
          violations: [{ field: "card.cvc", description: "must be 3 or 4 digits" }],
        },
      ],
    });
  });

  test("INVALID_ARGUMENT for a missing amount, an expired card, an empty refund key and an empty id", async () => {
    const noAmount = await rejection(client.charge(chargeRequest({ amount: undefined })));
    assert.equal(statusDetails(noAmount).details[0]?.violations[0]?.field, "amount");
    const expired = chargeRequest();
    expired.card = { ...expired.card!, expiryYear: NEXT_YEAR - 3 };
    assert.equal(statusDetails(await rejection(client.charge(expired))).details[0]?.violations[0]?.field, "card.expiry_year");
    const refund = await rejection(client.refund({ idempotencyKey: "", paymentId: "pay_x", reason: "" }));
    assert.equal(refund.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(statusDetails(refund).details[0]?.violations[0]?.field, "idempotency_key");
    const get = await rejection(client.getPayment(""));
    assert.equal(get.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(statusDetails(get).details[0]?.violations[0]?.field, "id");
  });

  test("NOT_FOUND names the unknown id, for GetPayment and Refund", async () => {
    const get = await rejection(client.getPayment("pay_nope"));
    assert.equal(get.code, grpc.status.NOT_FOUND);
    assert.match(get.details, /pay_nope/);
    const refund = await rejection(client.refund({ idempotencyKey: "svc-r0", paymentId: "pay_nope", reason: "" }));
    assert.equal(refund.code, grpc.status.NOT_FOUND);
  });

  test("a reused key with another request is FAILED_PRECONDITION", async () => {
    await client.charge(chargeRequest({ idempotencyKey: "svc-reuse" }));
    const error = await rejection(client.charge(chargeRequest({ idempotencyKey: "svc-reuse", orderId: "other" })));
    assert.equal(error.code, grpc.status.FAILED_PRECONDITION);
    assert.match(error.details, /idempotency_key/);
  });

  test("refund: CHARGED becomes REFUNDED; DECLINED is FAILED_PRECONDITION", async () => {
    const { payment } = await client.charge(chargeRequest({ idempotencyKey: "svc-refund" }));
    const refunded = await client.refund({ idempotencyKey: "svc-refund-r", paymentId: payment!.id, reason: "cancel" });
    assert.equal(refunded.payment?.status, PaymentStatus.PAYMENT_STATUS_REFUNDED);
    const again = await client.refund({ idempotencyKey: "svc-refund-r2", paymentId: payment!.id, reason: "x" });
    assert.deepEqual(again.payment, refunded.payment);

    const declinedRequest = chargeRequest({ idempotencyKey: "svc-refund-d" });
    declinedRequest.card = { ...declinedRequest.card!, number: TEST_CARDS.declined };
    const declined = (await client.charge(declinedRequest)).payment!;
    const error = await rejection(client.refund({ idempotencyKey: "svc-refund-d2", paymentId: declined.id, reason: "" }));
    assert.equal(error.code, grpc.status.FAILED_PRECONDITION);
  });

  test("the transient test card is UNAVAILABLE", async () => {
    const request = chargeRequest({ idempotencyKey: "svc-119" });
    request.card = { ...request.card!, number: TEST_CARDS.processorError };
    const error = await rejection(client.charge(request));
    assert.equal(error.code, grpc.status.UNAVAILABLE);
  });

  test("the largest int64 amount survives the wire and the store", async () => {
    const max = 2n ** 63n - 1n;
    const { payment } = await client.charge(
      chargeRequest({ idempotencyKey: "svc-max", amount: { currencyCode: "JPY", amountMinor: max } }),
    );
    assert.equal(payment?.amount?.amountMinor, max);
    assert.equal((await client.getPayment(payment!.id)).payment?.amount?.amountMinor, max);
  });

  test("ResolveCharge returns the payment a Charge made, as it is now", async () => {
    const { payment } = await client.charge(chargeRequest({ idempotencyKey: "svc-resolve" }));
    assert.deepEqual((await client.resolveCharge("svc-resolve")).payment, payment);
    await client.refund({ idempotencyKey: "svc-resolve-r", paymentId: payment!.id, reason: "" });
    const resolved = (await client.resolveCharge("svc-resolve")).payment;
    assert.deepEqual(resolved, { ...payment, status: PaymentStatus.PAYMENT_STATUS_REFUNDED });
  });

  test("ResolveCharge of an unused key: no payment, and a later Charge with it is FAILED_PRECONDITION", async () => {
    const resolved = await client.resolveCharge("svc-lost");
    assert.equal(resolved.payment, undefined);
    const error = await rejection(client.charge(chargeRequest({ idempotencyKey: "svc-lost", orderId: "order-lost" })));
    assert.equal(error.code, grpc.status.FAILED_PRECONDITION);
    assert.match(error.details, /idempotency_key 'svc-lost' was retired by ResolveCharge; no charge was made/);
    assert.equal((await client.resolveCharge("svc-lost")).payment, undefined);
    const db = new Database(testConfig(dir).dbPath, { readonly: true });
    try {
      assert.equal(db.prepare("SELECT count(*) FROM payments WHERE order_id = 'order-lost'").pluck().get(), 0);
    } finally {
      db.close();
    }
  });

  test("ResolveCharge: an empty key is INVALID_ARGUMENT naming it, a Refund's key FAILED_PRECONDITION", async () => {
    const empty = await rejection(client.resolveCharge(""));
    assert.equal(empty.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(empty.details, "idempotency_key: is required");
    assert.deepEqual(statusDetails(empty).details[0]?.violations, [
      { field: "idempotency_key", description: "is required" },
    ]);

    const { payment } = await client.charge(chargeRequest({ idempotencyKey: "svc-rk" }));
    await client.refund({ idempotencyKey: "svc-rk-refund", paymentId: payment!.id, reason: "" });
    const refundKey = await rejection(client.resolveCharge("svc-rk-refund"));
    assert.equal(refundKey.code, grpc.status.FAILED_PRECONDITION);
    assert.match(refundKey.details, /Refund/);
  });

  test("20 concurrent charges with one key make one payment", async () => {
    const request = chargeRequest({ idempotencyKey: "svc-concurrent", orderId: "order-concurrent" });
    const responses = await Promise.all(Array.from({ length: 20 }, () => client.charge(request)));
    const ids = new Set(responses.map((response) => response.payment?.id));
    assert.equal(ids.size, 1);
    const db = new Database(testConfig(dir).dbPath, { readonly: true });
    try {
      const row = db.prepare("SELECT count(*) AS n FROM payments WHERE order_id = ?").get("order-concurrent") as {
        n: number;
      };
      assert.equal(row.n, 1);
    } finally {
      db.close();
    }
  });
});

describe("unexpected exceptions", () => {
  test("become INTERNAL 'internal error', logged with their stack, never UNKNOWN", async (t) => {
    const lines: string[] = [];
    configureLogging("ERROR", (line) => lines.push(line));
    t.after(() => configureLogging("ERROR"));
    const broken: PaymentsApi = {
      charge: () => Promise.reject(new Error("async secret")),
      refund: () => {
        throw new TypeError("sync secret");
      },
      getPayment: () => {
        throw new Error("sync secret");
      },
      resolveCharge: () => Promise.reject(new Error("async secret")),
    };
    const payments = await build(testConfig(tempDir(t)), { api: broken });
    const client = connect(payments.port);
    t.after(() => {
      client.close();
      payments.server.forceShutdown();
      payments.store.close();
    });

    for (const call of [
      client.getPayment("pay_1"),
      client.refund({ idempotencyKey: "k", paymentId: "p", reason: "" }),
      client.charge(chargeRequest()),
      client.resolveCharge("k"),
    ]) {
      const error = await rejection(call);
      assert.equal(error.code, grpc.status.INTERNAL);
      assert.equal(error.details, "internal error");
    }
    assert.equal(lines.length, 4);
    const logged = lines.map((line) => JSON.parse(line) as Record<string, string>);
    assert.ok(logged.every((record) => record["level"] === "ERROR"));
    assert.match(logged[0]?.["message"] ?? "", /GetPayment/);
    assert.match(logged[0]?.["exception"] ?? "", /sync secret/);
    assert.match(logged[2]?.["exception"] ?? "", /async secret/);
    assert.match(logged[3]?.["message"] ?? "", /ResolveCharge/);
  });
});
