// The domain over a real (in-memory) store: idempotency of Charge and Refund,
// the refund life cycle, declines as results, transient processor errors
// that leave nothing behind, and ResolveCharge settling a lost charge.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { type ChargeInput, type PaymentStore, Payments } from "../src/domain";
import { FailedPrecondition, InvalidArgument, NotFound, Unavailable } from "../src/errors";
import { TEST_CARDS } from "../src/processor";
import { SqlitePaymentStore } from "../src/store";
import { chargeInput } from "../testing/helpers";

let store: SqlitePaymentStore;
let payments: Payments;
let ids: number;
// A fixed clock, inside the validity of the helpers' cards (expiring next year).
const NOW = new Date();

beforeEach(() => {
  store = SqlitePaymentStore.open(":memory:");
  ids = 0;
  payments = new Payments(store, {
    now: () => NOW,
    newId: () => {
      ids += 1;
      return `pay_${ids}`;
    },
  });
});

afterEach(() => store.close());

function withCard(number: string, overrides: Partial<ChargeInput> = {}): ChargeInput {
  const base = chargeInput(overrides);
  return { ...base, card: base.card && { ...base.card, number } };
}

describe("charge", () => {
  test("a charged payment keeps only the last four digits", () => {
    const payment = payments.charge(chargeInput());
    assert.equal(payment.status, "CHARGED");
    assert.equal(payment.cardLast4, "4242");
    assert.equal(payment.declineReason, "");
    assert.equal(payment.orderId, "order-1");
    assert.deepEqual(payment.amount, { currencyCode: "EUR", amountMinor: 1234n });
    assert.deepEqual(payment.createTime, NOW);
    assert.deepEqual(store.getPayment(payment.id), payment);
  });

  test("a decline is a result with its reason, not an error", () => {
    const declined = payments.charge(withCard(TEST_CARDS.declined));
    assert.equal(declined.status, "DECLINED");
    assert.equal(declined.declineReason, "card_declined");
    const poor = payments.charge(withCard(TEST_CARDS.insufficientFunds, { idempotencyKey: "key-2" }));
    assert.equal(poor.declineReason, "insufficient_funds");
  });

  test("the same key and request twice give one payment", () => {
    const first = payments.charge(chargeInput());
    const second = payments.charge(chargeInput());
    assert.deepEqual(second, first);
    assert.equal(ids, 1, "a second payment id was made");
  });

  test("the same key with a different request is FAILED_PRECONDITION naming idempotency_key", () => {
    payments.charge(chargeInput());
    const changes: Partial<ChargeInput>[] = [
      { orderId: "order-2" },
      { amount: { currencyCode: "EUR", amountMinor: 1235n } },
      { amount: { currencyCode: "USD", amountMinor: 1234n } },
      { card: { ...chargeInput().card!, cvc: "124" } },
      { card: { ...chargeInput().card!, holderName: "Someone Else" } },
      { card: { ...chargeInput().card!, number: "5555555555554444" } },
    ];
    for (const change of changes) {
      assert.throws(() => payments.charge(chargeInput(change)), (error: unknown) => {
        assert.ok(error instanceof FailedPrecondition, String(error));
        assert.match(error.message, /idempotency_key/);
        return true;
      });
    }
    assert.equal(ids, 1);
  });

  test("a transient processor error stores nothing, so a retry with the same key runs again", () => {
    assert.throws(() => payments.charge(withCard(TEST_CARDS.processorError)), Unavailable);
    // Had the failed attempt been remembered, another request under the same
    // key would be refused; it is charged instead.
    const retried = payments.charge(chargeInput());
    assert.equal(retried.status, "CHARGED");
    assert.equal(ids, 1);
  });

  test("a repeat gets the first response even after the payment was refunded", () => {
    const charged = payments.charge(chargeInput());
    payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "cancelled" });
    assert.equal(payments.charge(chargeInput()).status, "CHARGED");
    assert.equal(payments.getPayment(charged.id).status, "REFUNDED");
  });
});

describe("refund", () => {
  test("moves a charged payment to REFUNDED", () => {
    const charged = payments.charge(chargeInput());
    const refunded = payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "cancelled" });
    assert.deepEqual(refunded, { ...charged, status: "REFUNDED" });
    assert.deepEqual(payments.getPayment(charged.id), refunded);
  });

  test("an already refunded payment is returned unchanged, even under a new key", () => {
    const charged = payments.charge(chargeInput());
    const first = payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "cancelled" });
    assert.deepEqual(payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "cancelled" }), first);
    assert.deepEqual(payments.refund({ idempotencyKey: "refund-2", paymentId: charged.id, reason: "again" }), first);
  });

  test("the same refund key with another request is FAILED_PRECONDITION", () => {
    const charged = payments.charge(chargeInput());
    payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "cancelled" });
    assert.throws(
      () => payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "other reason" }),
      FailedPrecondition,
    );
  });

  test("a charge key reused for a refund is a different request", () => {
    const charged = payments.charge(chargeInput());
    assert.throws(
      () => payments.refund({ idempotencyKey: "key-1", paymentId: charged.id, reason: "" }),
      (error: unknown) => error instanceof FailedPrecondition && /idempotency_key/.test(error.message),
    );
    assert.equal(payments.getPayment(charged.id).status, "CHARGED");
  });

  test("a declined payment cannot be refunded", () => {
    const declined = payments.charge(withCard(TEST_CARDS.declined));
    assert.throws(
      () => payments.refund({ idempotencyKey: "refund-1", paymentId: declined.id, reason: "" }),
      FailedPrecondition,
    );
    assert.equal(payments.getPayment(declined.id).status, "DECLINED");
  });

  test("an unknown payment is NOT_FOUND naming it", () => {
    assert.throws(
      () => payments.refund({ idempotencyKey: "refund-1", paymentId: "pay_missing", reason: "" }),
      (error: unknown) => error instanceof NotFound && error.message.includes("pay_missing"),
    );
  });
});

describe("getPayment", () => {
  test("an unknown id is NOT_FOUND naming it", () => {
    assert.throws(
      () => payments.getPayment("pay_missing"),
      (error: unknown) => error instanceof NotFound && error.message.includes("pay_missing"),
    );
  });

  test("ids are pay_ and a UUID by default", () => {
    const real = new Payments(store);
    const payment = real.charge(chargeInput({ idempotencyKey: "key-uuid" }));
    assert.match(payment.id, /^pay_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe("resolveCharge", () => {
  function refusedAsRetired(error: unknown): boolean {
    assert.ok(error instanceof FailedPrecondition, String(error));
    assert.match(error.message, /idempotency_key 'key-1' was retired by ResolveCharge; no charge was made/);
    return true;
  }

  test("returns the payment a charged Charge made, and makes none", () => {
    const charged = payments.charge(chargeInput());
    assert.deepEqual(payments.resolveCharge("key-1"), charged);
    assert.equal(ids, 1);
    // The Charge itself can still be repeated: its key is not retired.
    assert.deepEqual(payments.charge(chargeInput()), charged);
  });

  test("returns a declined payment with its reason", () => {
    const declined = payments.charge(withCard(TEST_CARDS.insufficientFunds));
    const resolved = payments.resolveCharge("key-1");
    assert.equal(resolved?.status, "DECLINED");
    assert.equal(resolved?.declineReason, "insufficient_funds");
    assert.deepEqual(resolved, declined);
  });

  test("returns the payment as it is now: REFUNDED after a refund", () => {
    const charged = payments.charge(chargeInput());
    payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "cancelled" });
    assert.deepEqual(payments.resolveCharge("key-1"), { ...charged, status: "REFUNDED" });
  });

  test("an unused key is retired: no payment, and a later Charge with it is refused and moves no money", () => {
    assert.equal(payments.resolveCharge("key-1"), undefined);
    assert.throws(() => payments.charge(chargeInput()), refusedAsRetired);
    // Refused before the processor is asked: even its outage card gets the refusal.
    assert.throws(() => payments.charge(withCard(TEST_CARDS.processorError)), refusedAsRetired);
    assert.equal(ids, 0, "a payment was made with a retired key");
    assert.equal(payments.resolveCharge("key-1"), undefined);
  });

  test("after a Charge that failed UNAVAILABLE (nothing stored), the key is retired and a retry refused", () => {
    assert.throws(() => payments.charge(withCard(TEST_CARDS.processorError)), Unavailable);
    assert.equal(payments.resolveCharge("key-1"), undefined);
    assert.throws(() => payments.charge(withCard(TEST_CARDS.processorError)), refusedAsRetired);
    assert.throws(() => payments.charge(chargeInput()), refusedAsRetired);
    assert.equal(ids, 0);
  });

  test("a Refund with a retired key is refused too", () => {
    const charged = payments.charge(chargeInput({ idempotencyKey: "key-charged" }));
    payments.resolveCharge("key-1");
    assert.throws(
      () => payments.refund({ idempotencyKey: "key-1", paymentId: charged.id, reason: "" }),
      refusedAsRetired,
    );
    assert.equal(payments.getPayment(charged.id).status, "CHARGED");
  });

  test("calling it again returns the same answer", () => {
    const charged = payments.charge(chargeInput({ idempotencyKey: "key-charged" }));
    assert.deepEqual(payments.resolveCharge("key-charged"), charged);
    assert.deepEqual(payments.resolveCharge("key-charged"), charged);
    assert.equal(payments.resolveCharge("key-unused"), undefined);
    assert.equal(payments.resolveCharge("key-unused"), undefined);
  });

  test("a key used by a Refund is FAILED_PRECONDITION, and the refund stays repeatable", () => {
    const charged = payments.charge(chargeInput());
    const refund = { idempotencyKey: "refund-1", paymentId: charged.id, reason: "cancelled" };
    const refunded = payments.refund(refund);
    assert.throws(
      () => payments.resolveCharge("refund-1"),
      (error: unknown) =>
        error instanceof FailedPrecondition && /idempotency_key 'refund-1' was used by a Refund/.test(error.message),
    );
    assert.deepEqual(payments.refund(refund), refunded);
  });

  test("an empty or overlong key is INVALID_ARGUMENT naming idempotency_key, and retires nothing", () => {
    for (const key of ["", "k".repeat(129)]) {
      assert.throws(
        () => payments.resolveCharge(key),
        (error: unknown) => error instanceof InvalidArgument && error.field === "idempotency_key",
      );
      assert.equal(store.findKey(key), undefined);
    }
    assert.equal(payments.resolveCharge("k".repeat(128)), undefined);
  });

  test("every store access happens inside one transaction", () => {
    payments.charge(chargeInput({ idempotencyKey: "key-charged" }));
    const calls: string[] = [];
    let depth = 0;
    const seen = (name: string): void => void calls.push(`${name}@${depth}`);
    const watched: PaymentStore = {
      transaction: (fn) => {
        calls.push("begin");
        depth += 1;
        try {
          return store.transaction(fn);
        } finally {
          depth -= 1;
          calls.push("end");
        }
      },
      fingerprintKey: () => store.fingerprintKey(),
      findKey: (key) => {
        seen("findKey");
        return store.findKey(key);
      },
      insertKey: (record) => {
        seen("insertKey");
        store.insertKey(record);
      },
      getPayment: (id) => {
        seen("getPayment");
        return store.getPayment(id);
      },
      insertPayment: (payment) => {
        seen("insertPayment");
        store.insertPayment(payment);
      },
      markRefunded: (id, reason, at) => {
        seen("markRefunded");
        store.markRefunded(id, reason, at);
      },
    };
    const resolver = new Payments(watched, { now: () => NOW });
    resolver.resolveCharge("key-charged");
    assert.deepEqual(calls, ["begin", "findKey@1", "getPayment@1", "end"]);
    calls.length = 0;
    resolver.resolveCharge("key-unused");
    assert.deepEqual(calls, ["begin", "findKey@1", "insertKey@1", "end"]);
  });
});
