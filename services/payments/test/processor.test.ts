// The simulated processor's answers for the well-known test cards.

import assert from "node:assert/strict";
import { test } from "node:test";

import { authorize, TEST_CARDS } from "../src/processor";

test("4242424242424242 is charged", () => {
  assert.deepEqual(authorize(TEST_CARDS.charged), { outcome: "charged" });
  assert.equal(TEST_CARDS.charged, "4242424242424242");
});

test("4000000000000002 is declined with card_declined", () => {
  assert.deepEqual(authorize("4000000000000002"), { outcome: "declined", reason: "card_declined" });
});

test("4000000000009995 is declined with insufficient_funds", () => {
  assert.deepEqual(authorize("4000000000009995"), { outcome: "declined", reason: "insufficient_funds" });
});

test("4000000000000119 makes the processor unavailable", () => {
  assert.deepEqual(authorize("4000000000000119"), { outcome: "unavailable" });
});

test("any other number is charged", () => {
  assert.deepEqual(authorize("5555555555554444"), { outcome: "charged" });
  assert.deepEqual(authorize("378282246310005"), { outcome: "charged" });
});
