// The fault file's schema (fault-file.ts), without a network: what a good
// file gives payments, and a table of mistakes with the line, key and problem
// each is reported with.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import { status } from "@grpc/grpc-js";

import { FaultFileError, type FaultRule, loadFaultRules, parseFaultRules } from "../src/fault-file";
import { tempDir } from "../testing/helpers";

const METHODS = ["Charge", "Refund", "GetPayment", "ResolveCharge"];

function parse(text: string): Record<string, FaultRule> {
  return Object.fromEntries(parseFaultRules(text, "payments", METHODS, "faults.yaml"));
}

test("payments' rules, with defaults, and nothing from other services' entries", () => {
  const rules = parse(`
version: 1
faults:
  payments:
    "*": {delay_ms: 300}
    Charge: {error_ratio: 0.25, error_code: RESOURCE_EXHAUSTED}
    Refund: {error_ratio: 1}
    GetPayment: {delay_ms: 0x10, error_ratio: 0, error_code: INTERNAL}
  inventory:
    ReserveStock: {error_ratio: 0.3, error_code: UNAVAILABLE}
    NotEvenChecked: {anything: [goes]}
`);
  assert.deepEqual(rules, {
    "*": { delayMs: 300, errorRatio: 0, errorCode: status.UNAVAILABLE },
    Charge: { delayMs: 0, errorRatio: 0.25, errorCode: status.RESOURCE_EXHAUSTED },
    Refund: { delayMs: 0, errorRatio: 1, errorCode: status.UNAVAILABLE },
    GetPayment: { delayMs: 16, errorRatio: 0, errorCode: status.INTERNAL },
  });
});

test("no faults: absent, null or empty sections, and another service only", () => {
  const texts = [
    "",
    "# nothing yet",
    "version: 1",
    "faults:",
    "faults: {}",
    "faults: ~",
    "{}",
    "faults: {payments: }",
    "faults: {orders: {Get: {delay_ms: 1}}}",
  ];
  for (const text of texts) {
    assert.deepEqual(parse(text), {}, text);
  }
});

test("mistakes name the file, line, key and problem", () => {
  const cases: [string, string][] = [
    ["[1, 2]", "faults.yaml:1: (document): must be a mapping, got a list"],
    ["faults: {payments: {Charge: {delay_ms: 1}}\n", "faults.yaml:2: (document): not valid YAML: "],
    ["version: 2", "faults.yaml:1: version: must be 1, got '2'"],
    ["version: '1'", "faults.yaml:1: version: must be 1, got '1'"],
    ["services: {}", "faults.yaml:1: services: unknown key; expected version, faults"],
    ["faults: [payments]", "faults.yaml:1: faults: must be a mapping, got a list"],
    ["faults:\n  payments: [Charge]", "faults.yaml:2: faults.payments: must be a mapping, got a list"],
    ["faults:\n  orders:\n    Get: 5", "faults.yaml:3: faults.orders.Get: must be a mapping, got an integer"],
    [
      "faults:\n  payments:\n    Chrage: {delay_ms: 1}",
      "faults.yaml:3: faults.payments.Chrage: unknown method 'Chrage'; expected one of *, Charge, Refund, GetPayment, ResolveCharge",
    ],
    [
      "faults:\n  payments:\n    Charge: {}",
      "faults.yaml:3: faults.payments.Charge: a rule needs at least one of delay_ms, error_ratio, error_code",
    ],
    ["faults:\n  payments:\n    Charge:", "faults.yaml:3: faults.payments.Charge: must be a mapping, got null"],
    [
      "faults:\n  payments:\n    Charge: {delay: 5}",
      "faults.yaml:3: faults.payments.Charge.delay: unknown key; expected delay_ms, error_ratio, error_code",
    ],
    [
      "faults:\n  payments:\n    Charge: {delay_ms: -1}",
      "faults.yaml:3: faults.payments.Charge.delay_ms: must be at least 0, got -1",
    ],
    [
      "faults:\n  payments:\n    Charge: {delay_ms: 1.5}",
      "faults.yaml:3: faults.payments.Charge.delay_ms: must be an integer, got a number",
    ],
    [
      "faults:\n  payments:\n    Charge: {delay_ms: '300'}",
      "faults.yaml:3: faults.payments.Charge.delay_ms: must be an integer, got a string",
    ],
    [
      "faults:\n  payments:\n    Charge: {error_ratio: 1.5}",
      "faults.yaml:3: faults.payments.Charge.error_ratio: must be within [0, 1], got 1.5",
    ],
    [
      "faults:\n  payments:\n    Charge: {error_ratio: .nan}",
      "faults.yaml:3: faults.payments.Charge.error_ratio: must be within [0, 1], got .nan",
    ],
    [
      "faults:\n  payments:\n    Charge: {error_ratio: yes}",
      "faults.yaml:3: faults.payments.Charge.error_ratio: must be a number, got a boolean",
    ],
    [
      "faults:\n  payments:\n    Charge: {error_ratio: 30%}",
      "faults.yaml:3: faults.payments.Charge.error_ratio: must be a number, got a string",
    ],
    [
      "faults:\n  payments:\n    Charge: {error_code: OK}",
      "faults.yaml:3: faults.payments.Charge.error_code: 'OK' is not a gRPC status code name other than OK; expected one of CANCELLED, UNKNOWN,",
    ],
    [
      "faults:\n  payments:\n    Charge: {error_code: unavailable}",
      "faults.yaml:3: faults.payments.Charge.error_code: 'unavailable' is not a gRPC status code name other than OK " +
        "(write UNAVAILABLE); expected one of CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, " +
        "ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, " +
        "UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED",
    ],
    [
      "faults:\n  payments:\n    Charge: {error_code: 14}",
      "faults.yaml:3: faults.payments.Charge.error_code: must be a non-empty string, got an integer",
    ],
    [
      "faults:\n  payments:\n    Charge: {delay_ms: 1}\n    Charge: {delay_ms: 2}",
      "faults.yaml:4: faults.payments.Charge: duplicate key",
    ],
    ["faults:\n  1: {}", "faults.yaml:2: faults (a key): must be a non-empty string, got an integer"],
    ["base: &b {delay_ms: 1}\n", "faults.yaml:1: base: unknown key; expected version, faults"],
    [
      "faults:\n  payments:\n    <<: {Charge: {delay_ms: 1}}",
      "faults.yaml:3: faults.payments.<<: merge keys are not allowed",
    ],
  ];
  for (const [text, expected] of cases) {
    assert.throws(
      () => parse(text),
      (error: unknown) => {
        assert.ok(error instanceof FaultFileError, `${text}: ${String(error)}`);
        const why = `${JSON.stringify(text)}:\n  got      ${error.message}\n  expected ${expected}`;
        assert.ok(error.message.startsWith(expected), why);
        return true;
      },
    );
  }
});

test("an alias stands for its anchor, as in PyYAML", () => {
  const rules = parse(`
faults:
  orders: {Get: &slow {delay_ms: 50}}
  payments: {Charge: *slow}
`);
  assert.deepEqual(rules, { Charge: { delayMs: 50, errorRatio: 0, errorCode: status.UNAVAILABLE } });
});

test("a file that cannot be read is a FaultFileError naming it", (t) => {
  const dir = tempDir(t);
  const missing = path.join(dir, "missing.yaml");
  assert.throws(() => loadFaultRules(missing, "payments", METHODS), {
    message: `${missing}:0: (file): cannot read: No such file or directory`,
  });
  const file = path.join(dir, "faults.yaml");
  writeFileSync(file, "faults: {payments: {Refund: {delay_ms: 7}}}\n");
  assert.deepEqual(Object.fromEntries(loadFaultRules(file, "payments", METHODS)), {
    Refund: { delayMs: 7, errorRatio: 0, errorCode: status.UNAVAILABLE },
  });
});
