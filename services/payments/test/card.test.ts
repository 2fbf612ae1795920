// Validation of charge, refund and card fields: one case per field and
// problem, the order in which problems are reported, and expiry at the edge
// of a month.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { type CardInput, last4, luhnValid, validateCard } from "../src/card";
import { type ChargeInput, validateCharge, validateRefund } from "../src/domain";
import { InvalidArgument } from "../src/errors";
import { chargeInput } from "../testing/helpers";

const NOW = new Date("2030-05-15T12:00:00Z");
const CARD: CardInput = { number: "4242424242424242", expiryMonth: 5, expiryYear: 2030, cvc: "123", holderName: "A" };

/** Asserts that `fn` throws InvalidArgument for `field` and returns its problem. */
function invalid(fn: () => void, field: string): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof InvalidArgument, `expected InvalidArgument, got ${String(error)}`);
    assert.equal(error.field, field);
    assert.equal(error.message, `${field}: ${error.problem}`);
    return error.problem;
  }
  assert.fail(`expected InvalidArgument for ${field}, nothing was thrown`);
}

describe("luhnValid", () => {
  test("accepts the test cards and rejects a changed digit", () => {
    for (const number of ["4242424242424242", "4000000000000002", "4000000000009995", "4000000000000119"]) {
      assert.equal(luhnValid(number), true, number);
    }
    assert.equal(luhnValid("4242424242424241"), false);
    assert.equal(luhnValid("79927398713"), true);
    assert.equal(luhnValid("79927398710"), false);
  });

  test("rejects the empty string and non-digits", () => {
    assert.equal(luhnValid(""), false);
    assert.equal(luhnValid("42424242424242a2"), false);
  });
});

describe("validateCard", () => {
  test("accepts a valid card", () => {
    validateCard(CARD, NOW);
    validateCard({ ...CARD, cvc: "1234", number: "4000000000000002" }, NOW);
  });

  test("requires a card", () => {
    invalid(() => validateCard(undefined, NOW), "card");
  });

  const cases: [string, Partial<CardInput>, string][] = [
    ["empty number", { number: "" }, "card.number"],
    ["number with spaces", { number: "4242 4242 4242 4242" }, "card.number"],
    ["number too short", { number: "42424242424" }, "card.number"],
    ["number too long", { number: "42424242424242424242" }, "card.number"],
    ["number with a letter", { number: "424242424242424x" }, "card.number"],
    ["number failing Luhn", { number: "4242424242424241" }, "card.number"],
    ["month 0", { expiryMonth: 0 }, "card.expiry_month"],
    ["month 13", { expiryMonth: 13 }, "card.expiry_month"],
    ["two-digit year", { expiryYear: 30 }, "card.expiry_year"],
    ["five-digit year", { expiryYear: 20300 }, "card.expiry_year"],
    ["past year", { expiryYear: 2029, expiryMonth: 12 }, "card.expiry_year"],
    ["past month of this year", { expiryMonth: 4 }, "card.expiry_month"],
    ["empty cvc", { cvc: "" }, "card.cvc"],
    ["two-digit cvc", { cvc: "12" }, "card.cvc"],
    ["five-digit cvc", { cvc: "12345" }, "card.cvc"],
    ["cvc with a letter", { cvc: "12a" }, "card.cvc"],
  ];
  for (const [name, change, field] of cases) {
    test(`rejects ${name} naming ${field}`, () => {
      invalid(() => validateCard({ ...CARD, ...change }, NOW), field);
    });
  }

  test("the Luhn failure says so", () => {
    assert.match(invalid(() => validateCard({ ...CARD, number: "4242424242424241" }, NOW), "card.number"), /Luhn/);
  });

  test("a card is valid through the last moment of its expiry month, UTC", () => {
    const card = { ...CARD, expiryMonth: 5, expiryYear: 2030 };
    validateCard(card, new Date("2030-05-31T23:59:59.999Z"));
    invalid(() => validateCard(card, new Date("2030-06-01T00:00:00Z")), "card.expiry_month");
    invalid(() => validateCard({ ...card, expiryMonth: 12 }, new Date("2031-01-01T00:00:00Z")), "card.expiry_year");
  });

  test("reports the first problem in contract order", () => {
    const bad = { number: "1", expiryMonth: 0, expiryYear: 1, cvc: "", holderName: "" };
    invalid(() => validateCard(bad, NOW), "card.number");
    invalid(() => validateCard({ ...bad, number: CARD.number }, NOW), "card.expiry_month");
    invalid(() => validateCard({ ...bad, number: CARD.number, expiryMonth: 5 }, NOW), "card.expiry_year");
    invalid(() => validateCard({ ...CARD, expiryYear: 2001, cvc: "" }, NOW), "card.expiry_year");
  });

  test("last4 keeps the last four digits only", () => {
    assert.equal(last4("4000000000009995"), "9995");
  });
});

describe("validateCharge", () => {
  const valid = chargeInput({ card: CARD });

  test("accepts a valid request", () => {
    validateCharge(valid, NOW);
  });

  const cases: [string, Partial<ChargeInput>, string][] = [
    ["empty idempotency_key", { idempotencyKey: "" }, "idempotency_key"],
    ["idempotency_key over 128 characters", { idempotencyKey: "k".repeat(129) }, "idempotency_key"],
    ["empty order_id", { orderId: "" }, "order_id"],
    ["order_id over 128 characters", { orderId: "o".repeat(129) }, "order_id"],
    ["missing amount", { amount: undefined }, "amount"],
    ["lower-case currency", { amount: { currencyCode: "eur", amountMinor: 1n } }, "amount.currency_code"],
    ["empty currency", { amount: { currencyCode: "", amountMinor: 1n } }, "amount.currency_code"],
    ["four-letter currency", { amount: { currencyCode: "EURO", amountMinor: 1n } }, "amount.currency_code"],
    ["zero amount", { amount: { currencyCode: "EUR", amountMinor: 0n } }, "amount.amount_minor"],
    ["negative amount", { amount: { currencyCode: "EUR", amountMinor: -5n } }, "amount.amount_minor"],
    ["missing card", { card: undefined }, "card"],
    ["bad card number", { card: { ...CARD, number: "4242424242424241" } }, "card.number"],
  ];
  for (const [name, change, field] of cases) {
    test(`rejects ${name} naming ${field}`, () => {
      invalid(() => validateCharge({ ...valid, ...change }, NOW), field);
    });
  }

  test("keys of exactly 128 characters are accepted, counted in characters", () => {
    validateCharge({ ...valid, idempotencyKey: "k".repeat(128), orderId: "o".repeat(128) }, NOW);
    // 128 emoji are 256 UTF-16 units but 128 characters.
    validateCharge({ ...valid, idempotencyKey: "\u{1F600}".repeat(128) }, NOW);
    invalid(() => validateCharge({ ...valid, idempotencyKey: "\u{1F600}".repeat(129) }, NOW), "idempotency_key");
  });

  test("reports the first problem in contract order", () => {
    const bad: ChargeInput = { idempotencyKey: "", orderId: "", amount: undefined, card: undefined };
    invalid(() => validateCharge(bad, NOW), "idempotency_key");
    invalid(() => validateCharge({ ...bad, idempotencyKey: "k" }, NOW), "order_id");
    invalid(() => validateCharge({ ...bad, idempotencyKey: "k", orderId: "o" }, NOW), "amount");
    const noCard = { ...valid, card: undefined, amount: { currencyCode: "x", amountMinor: 0n } };
    invalid(() => validateCharge(noCard, NOW), "amount.currency_code");
  });
});

describe("validateRefund", () => {
  test("requires idempotency_key, then payment_id", () => {
    invalid(() => validateRefund({ idempotencyKey: "", paymentId: "", reason: "" }), "idempotency_key");
    invalid(() => validateRefund({ idempotencyKey: "k".repeat(129), paymentId: "p", reason: "" }), "idempotency_key");
    invalid(() => validateRefund({ idempotencyKey: "k", paymentId: "", reason: "" }), "payment_id");
    validateRefund({ idempotencyKey: "k", paymentId: "p", reason: "" });
  });
});
