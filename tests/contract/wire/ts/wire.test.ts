// Checks that the ts-proto stubs agree byte for byte with the wire vectors
// that tests/contract/wire/make_vectors.py writes with the Python stubs.
//
// Usage: node wire.test.js <path to vectors.json>; exits 1 on any mismatch.
// tests/contract/test_wire_vectors.py compiles this file with tsc and runs it.
import { readFileSync } from "node:fs";

import * as catalog from "../../../../gen/ts/shop/catalog/v1/catalog";
import * as common from "../../../../gen/ts/shop/common/v1/common";
import * as events from "../../../../gen/ts/shop/events/v1/events";
import * as inventory from "../../../../gen/ts/shop/inventory/v1/inventory";
import * as notifications from "../../../../gen/ts/shop/notifications/v1/notifications";
import * as orders from "../../../../gen/ts/shop/orders/v1/orders";
import * as payments from "../../../../gen/ts/shop/payments/v1/payments";

/** The parts of a ts-proto MessageFns<T> this test uses. */
interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
  fromJSON(object: unknown): T;
}

/** A codec with its message type erased, so one table can hold them all. */
interface WireCodec {
  /** decode, then encode again. */
  roundTrip(bytes: Uint8Array): Uint8Array;
  /** fromJSON, then encode. */
  fromJson(json: unknown): Uint8Array;
}

function wire<T>(codec: Codec<T>): WireCodec {
  return {
    roundTrip: (bytes) => codec.encode(codec.decode(bytes)).finish(),
    fromJson: (json) => codec.encode(codec.fromJSON(json)).finish(),
  };
}

// Full proto name -> ts-proto export. A vector of a type missing here fails.
const CODECS: ReadonlyMap<string, WireCodec> = new Map([
  ["shop.catalog.v1.Product", wire(catalog.Product)],
  ["shop.common.v1.Money", wire(common.Money)],
  ["shop.events.v1.OrderConfirmed", wire(events.OrderConfirmed)],
  ["shop.events.v1.OrderCancelled", wire(events.OrderCancelled)],
  ["shop.inventory.v1.ReserveStockRequest", wire(inventory.ReserveStockRequest)],
  ["shop.notifications.v1.Notification", wire(notifications.Notification)],
  ["shop.orders.v1.Order", wire(orders.Order)],
  ["shop.payments.v1.Payment", wire(payments.Payment)],
]);

interface Vector {
  name: string;
  type: string;
  json: unknown;
  hex: string;
}

function isVector(value: unknown): value is Vector {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  const v = value as Record<string, unknown>;
  return (
    typeof v.name === "string" &&
    typeof v.type === "string" &&
    typeof v.hex === "string" &&
    typeof v.json === "object" &&
    v.json !== null
  );
}

function loadVectors(path: string): Vector[] {
  const parsed: unknown = JSON.parse(readFileSync(path, "utf8"));
  if (!Array.isArray(parsed) || parsed.length === 0) {
    throw new Error(`${path}: expected a non-empty array of vectors`);
  }
  return parsed.map((value: unknown, i: number) => {
    if (!isVector(value)) {
      throw new Error(`${path}: vector ${i} is not {name, type, json, hex}`);
    }
    return value;
  });
}

function fromHex(hex: string): Uint8Array {
  // Buffer.from(..., "hex") stops silently at the first bad digit.
  if (!/^(?:[0-9a-f]{2})*$/.test(hex)) {
    throw new Error(`not lower-case hex bytes: ${JSON.stringify(hex)}`);
  }
  return new Uint8Array(Buffer.from(hex, "hex"));
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

/** Problems with one vector; empty when the stubs agree with it. */
function check(vector: Vector): string[] {
  const codec = CODECS.get(vector.type);
  if (codec === undefined) {
    return [`no ts-proto codec for ${vector.type}: add it to CODECS`];
  }
  const problems: string[] = [];
  const bytes = fromHex(vector.hex);
  const reencoded = toHex(codec.roundTrip(bytes));
  if (reencoded !== vector.hex) {
    problems.push(`decode+encode gives ${reencoded}\n    want ${vector.hex}`);
  }
  const fromJson = toHex(codec.fromJson(vector.json));
  if (fromJson !== vector.hex) {
    problems.push(`fromJSON+encode gives ${fromJson}\n    want ${vector.hex}`);
  }
  return problems;
}

/** int64 must stay exact past 2^53, where a JavaScript number would round. */
function checkBigint(vectors: readonly Vector[]): string[] {
  const name = "catalog_product_int64_beyond_2_53";
  const vector = vectors.find((v) => v.name === name);
  if (vector === undefined) {
    return [`vector ${name} is missing`];
  }
  const amount = catalog.Product.decode(fromHex(vector.hex)).price?.amountMinor;
  const want = 9007199254740993n;
  return amount === want ? [] : [`${name}: amountMinor is ${String(amount)}, want ${want}`];
}

function main(argv: readonly string[]): number {
  const path = argv[2];
  if (path === undefined) {
    console.error("usage: node wire.test.js <vectors.json>");
    return 2;
  }
  const vectors = loadVectors(path);
  let failed = 0;
  for (const vector of vectors) {
    let problems: string[];
    try {
      problems = check(vector);
    } catch (error: unknown) {
      problems = [`threw ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`];
    }
    if (problems.length === 0) {
      console.log(`ok   ${vector.name}`);
    } else {
      failed += 1;
      console.log(`FAIL ${vector.name} (${vector.type})`);
      for (const problem of problems) {
        console.log(`  ${problem}`);
      }
    }
  }
  console.log(`${vectors.length - failed} of ${vectors.length} vectors agree with ts-proto`);
  const bigint = checkBigint(vectors);
  for (const problem of bigint) {
    console.log(`FAIL ${problem}`);
  }
  return failed === 0 && bigint.length === 0 ? 0 : 1;
}

process.exitCode = main(process.argv);
