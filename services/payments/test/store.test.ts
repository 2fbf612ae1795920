// The SQLite store: what survives closing and reopening the file, money
// beyond 2^53, and what is never written to disk.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import Database from "better-sqlite3";

import { Payments } from "../src/domain";
import { SqlitePaymentStore } from "../src/store";
import { chargeInput, tempDir } from "../testing/helpers";

const MAX_INT64 = 2n ** 63n - 1n;

test("a payment is unchanged after closing and reopening the file", (t) => {
  const file = path.join(tempDir(t), "nested", "payments.db");
  const store = SqlitePaymentStore.open(file);
  const payment = new Payments(store).charge(chargeInput());
  store.close();
  assert.ok(existsSync(file), "the database file (and its folder) was not created");

  const reopened = SqlitePaymentStore.open(file);
  t.after(() => reopened.close());
  assert.deepEqual(reopened.getPayment(payment.id), payment);
});

test("an amount beyond 2^53 round-trips exactly, through the domain and the file", (t) => {
  const file = path.join(tempDir(t), "payments.db");
  const store = SqlitePaymentStore.open(file);
  const big = chargeInput({ amount: { currencyCode: "EUR", amountMinor: MAX_INT64 } });
  const payment = new Payments(store).charge(big);
  store.close();

  const reopened = SqlitePaymentStore.open(file);
  t.after(() => reopened.close());
  const loaded = reopened.getPayment(payment.id);
  assert.equal(loaded?.amount.amountMinor, MAX_INT64);
  assert.equal(typeof loaded?.amount.amountMinor, "bigint");
  // 2^53 + 1 is the first integer a float cannot hold.
  const odd = new Payments(reopened).charge(
    chargeInput({ idempotencyKey: "odd", amount: { currencyCode: "EUR", amountMinor: 2n ** 53n + 1n } }),
  );
  assert.equal(reopened.getPayment(odd.id)?.amount.amountMinor, 9007199254740993n);
});

test("idempotency survives a restart: a retry gets the first payment, not a refusal", (t) => {
  const file = path.join(tempDir(t), "payments.db");
  const store = SqlitePaymentStore.open(file);
  const first = new Payments(store).charge(chargeInput());
  const key = store.fingerprintKey();
  store.close();

  const reopened = SqlitePaymentStore.open(file);
  t.after(() => reopened.close());
  assert.deepEqual(reopened.fingerprintKey(), key);
  assert.deepEqual(new Payments(reopened).charge(chargeInput()), first);
});

test("each database gets its own random fingerprint key", (t) => {
  const dir = tempDir(t);
  const a = SqlitePaymentStore.open(path.join(dir, "a.db"));
  const b = SqlitePaymentStore.open(path.join(dir, "b.db"));
  t.after(() => {
    a.close();
    b.close();
  });
  assert.equal(a.fingerprintKey().length, 32);
  assert.notDeepEqual(a.fingerprintKey(), b.fingerprintKey());
});

test("neither the card number nor its plain hash reach the disk, and no column holds a number or CVC", (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "payments.db");
  const store = SqlitePaymentStore.open(file);
  const card = { number: "5105105105105100", expiryMonth: 12, expiryYear: 2099, cvc: "987", holderName: "Ada" };
  new Payments(store).charge(chargeInput({ card }));
  // Read while open too: with WAL the rows may still be in the -wal file.
  const contents = () =>
    Buffer.concat(readdirSync(dir).map((name) => readFileSync(path.join(dir, name))));
  const forbidden = [
    Buffer.from(card.number),
    createHash("sha256").update(card.number).digest(),
    Buffer.from(createHash("sha256").update(card.number).digest("hex")),
  ];
  for (const secret of forbidden) {
    assert.equal(contents().indexOf(secret), -1, `found ${secret.toString("hex")} on disk`);
  }
  store.close();
  for (const secret of forbidden) {
    assert.equal(contents().indexOf(secret), -1);
  }
  // The last four digits are what is kept.
  const db = new Database(file, { readonly: true });
  t.after(() => db.close());
  const row = db.prepare("SELECT card_last4 FROM payments").get() as { card_last4: string };
  assert.equal(row.card_last4, "5100");
  const columns = (db.prepare("SELECT name FROM pragma_table_info('payments')").all() as { name: string }[]).map(
    (c) => c.name,
  );
  assert.ok(!columns.some((name) => /cvc|number|pan/.test(name)), `unexpected columns ${columns.join(", ")}`);
});

test("the database is in WAL mode", (t) => {
  const file = path.join(tempDir(t), "payments.db");
  SqlitePaymentStore.open(file).close();
  const db = new Database(file, { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
});
