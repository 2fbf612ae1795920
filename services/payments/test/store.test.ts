// The SQLite store: what survives closing and reopening the file, money
// beyond 2^53, what is never written to disk, retired keys, and the
// migration of a file from before ResolveCharge.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import Database from "better-sqlite3";

import { Payments, RETIRED_FINGERPRINT } from "../src/domain";
import { FailedPrecondition } from "../src/errors";
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

test("a key retired by ResolveCharge stays retired after a restart", (t) => {
  const file = path.join(tempDir(t), "payments.db");
  const store = SqlitePaymentStore.open(file);
  assert.equal(new Payments(store).resolveCharge("lost-1"), undefined);
  store.close();

  const db = new Database(file, { readonly: true });
  const row = db.prepare("SELECT * FROM idempotency_keys WHERE key = 'lost-1'").get() as Record<string, unknown>;
  db.close();
  assert.equal(row["operation"], "charge");
  assert.equal(row["payment_id"], null);
  assert.equal(row["status"], null);
  assert.deepEqual(row["fingerprint"], RETIRED_FINGERPRINT);

  const reopened = SqlitePaymentStore.open(file);
  t.after(() => reopened.close());
  const payments = new Payments(reopened);
  assert.throws(() => payments.charge(chargeInput({ idempotencyKey: "lost-1" })), FailedPrecondition);
  assert.equal(payments.resolveCharge("lost-1"), undefined);
  const check = new Database(file, { readonly: true });
  t.after(() => check.close());
  assert.equal(check.prepare("SELECT count(*) FROM payments").pluck().get(), 0);
});

test("the table refuses a key row without a payment unless it is a retired charge key", (t) => {
  const file = path.join(tempDir(t), "payments.db");
  SqlitePaymentStore.open(file).close();
  const db = new Database(file);
  t.after(() => db.close());
  const insert = db.prepare(
    `INSERT INTO idempotency_keys (key, operation, fingerprint, payment_id, status, create_time_ms)
     VALUES (?, ?, ?, NULL, ?, 0)`,
  );
  assert.throws(() => insert.run("r", "refund", RETIRED_FINGERPRINT, null), /CHECK constraint failed/);
  assert.throws(() => insert.run("s", "charge", RETIRED_FINGERPRINT, "CHARGED"), /CHECK constraint failed/);
  insert.run("c", "charge", RETIRED_FINGERPRINT, null);
});

// idempotency_keys as it was before ResolveCharge (schema version 0).
const KEYS_TABLE_V0 = `CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    operation TEXT NOT NULL CHECK (operation IN ('charge', 'refund')),
    fingerprint BLOB NOT NULL,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    status TEXT NOT NULL CHECK (status IN ('CHARGED', 'DECLINED', 'REFUNDED')),
    create_time_ms INTEGER NOT NULL
) STRICT`;

test("a file from before ResolveCharge is migrated on open, its keys kept", (t) => {
  const file = path.join(tempDir(t), "payments.db");
  const store = SqlitePaymentStore.open(file);
  const charged = new Payments(store).charge(chargeInput());
  const refunded = new Payments(store).refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "x" });
  store.close();
  // Turn the file back into a version 0 one, keys included.
  const old = new Database(file);
  old.exec(`
    BEGIN;
    CREATE TABLE keys_copy AS SELECT * FROM idempotency_keys;
    DROP TABLE idempotency_keys;
    ${KEYS_TABLE_V0};
    INSERT INTO idempotency_keys SELECT * FROM keys_copy;
    DROP TABLE keys_copy;
    PRAGMA user_version = 0;
    COMMIT;
  `);
  assert.equal(old.prepare("SELECT count(*) AS n FROM idempotency_keys").pluck().get(), 2);
  old.close();

  const migrated = SqlitePaymentStore.open(file);
  t.after(() => migrated.close());
  const payments = new Payments(migrated);
  assert.deepEqual(payments.charge(chargeInput()), charged); // the charge key replays
  assert.deepEqual(payments.refund({ idempotencyKey: "refund-1", paymentId: charged.id, reason: "x" }), refunded);
  assert.deepEqual(payments.resolveCharge("key-1"), refunded);
  assert.equal(payments.resolveCharge("lost-1"), undefined); // which version 0 could not store
  assert.throws(() => payments.charge(chargeInput({ idempotencyKey: "lost-1" })), FailedPrecondition);

  const db = new Database(file, { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma("user_version", { simple: true }), 1);
  const nullable = db
    .prepare("SELECT name FROM pragma_table_info('idempotency_keys') WHERE \"notnull\" = 0 AND pk = 0")
    .pluck()
    .all();
  assert.deepEqual(nullable.sort(), ["payment_id", "status"]);
});

test("a file from a newer version of the service is refused, not changed", (t) => {
  const file = path.join(tempDir(t), "payments.db");
  SqlitePaymentStore.open(file).close();
  const db = new Database(file);
  db.pragma("user_version = 2");
  db.close();
  assert.throws(() => SqlitePaymentStore.open(file), /schema version 2 is newer than this service's \(1\)/);
  const after = new Database(file, { readonly: true });
  t.after(() => after.close());
  assert.equal(after.pragma("user_version", { simple: true }), 2);
});
