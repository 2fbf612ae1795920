// The payments service's own SQLite database, through better-sqlite3.
//
// better-sqlite3 is synchronous on purpose: a transaction is a plain function
// call, so the domain's check-then-insert cannot be interleaved with another
// request (see domain.ts). Each statement takes microseconds on a local file,
// which is cheaper than a worker thread hop per query.
//
// Money is SQLite INTEGER read back as BigInt (safeIntegers), so amounts up to
// 2^63-1 survive; a JS number would silently round past 2^53. Only the last
// four card digits are stored, never the number or the CVC.
//
// The schema's version is SQLite's user_version. Version 1 let a key row have
// no payment (a charge key retired by ResolveCharge); files from before it
// (version 0, where every key row had one) are migrated on open.

import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import * as path from "node:path";

import Database from "better-sqlite3";

import type { KeyRecord, Operation, Payment, PaymentStatus, PaymentStore } from "./domain";

const SCHEMA_VERSION = 1;

// A key row with neither payment_id nor status is a charge key that
// ResolveCharge retired: no payment was made with it, and none ever will be.
const KEYS_TABLE = `(
    key TEXT PRIMARY KEY,
    operation TEXT NOT NULL CHECK (operation IN ('charge', 'refund')),
    fingerprint BLOB NOT NULL,
    payment_id TEXT REFERENCES payments (id),
    status TEXT CHECK (status IN ('CHARGED', 'DECLINED', 'REFUNDED')),
    create_time_ms INTEGER NOT NULL,
    CHECK ((payment_id IS NULL) = (status IS NULL)),
    CHECK (payment_id IS NOT NULL OR operation = 'charge')
) STRICT`;

// STRICT tables reject a value of the wrong type instead of converting it.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    status TEXT NOT NULL CHECK (status IN ('CHARGED', 'DECLINED', 'REFUNDED')),
    decline_reason TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    create_time_ms INTEGER NOT NULL,
    refund_reason TEXT,
    refund_time_ms INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS payments_by_order ON payments (order_id);
CREATE TABLE IF NOT EXISTS idempotency_keys ${KEYS_TABLE};
`;

// Version 0 -> 1: payment_id and status become nullable. SQLite cannot drop
// a NOT NULL in place, so the table is copied into a new one (nothing refers
// to idempotency_keys, so dropping and renaming is safe).
const KEYS_NULLABLE = `
CREATE TABLE idempotency_keys_v1 ${KEYS_TABLE};
INSERT INTO idempotency_keys_v1 (key, operation, fingerprint, payment_id, status, create_time_ms)
    SELECT key, operation, fingerprint, payment_id, status, create_time_ms FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_v1 RENAME TO idempotency_keys;
`;

interface PaymentRow {
  id: string;
  order_id: string;
  currency_code: string;
  amount_minor: bigint;
  status: PaymentStatus;
  decline_reason: string;
  card_last4: string;
  create_time_ms: bigint;
}

interface KeyRow {
  key: string;
  operation: Operation;
  fingerprint: Buffer;
  /** Both null for a retired key. */
  payment_id: string | null;
  status: PaymentStatus | null;
  create_time_ms: bigint;
}

function toPayment(row: PaymentRow): Payment {
  return {
    id: row.id,
    orderId: row.order_id,
    amount: { currencyCode: row.currency_code, amountMinor: row.amount_minor },
    status: row.status,
    declineReason: row.decline_reason,
    cardLast4: row.card_last4,
    createTime: new Date(Number(row.create_time_ms)),
  };
}

export class SqlitePaymentStore implements PaymentStore {
  private readonly key: Buffer;
  private readonly statements;

  private constructor(private readonly db: Database.Database) {
    // Every INTEGER comes back as BigInt; the few that are not money
    // (timestamps) are converted explicitly where they are read.
    db.defaultSafeIntegers(true);
    SqlitePaymentStore.migrate(db);
    this.statements = {
      insertSetting: db.prepare("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)"),
      getSetting: db.prepare<[string], { value: Buffer }>("SELECT value FROM settings WHERE name = ?"),
      getPayment: db.prepare<[string], PaymentRow>(
        `SELECT id, order_id, currency_code, amount_minor, status, decline_reason, card_last4, create_time_ms
         FROM payments WHERE id = ?`,
      ),
      insertPayment: db.prepare(
        `INSERT INTO payments
           (id, order_id, currency_code, amount_minor, status, decline_reason, card_last4, create_time_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      markRefunded: db.prepare(
        `UPDATE payments SET status = 'REFUNDED', refund_reason = ?, refund_time_ms = ?
         WHERE id = ? AND status = 'CHARGED'`,
      ),
      findKey: db.prepare<[string], KeyRow>(
        `SELECT key, operation, fingerprint, payment_id, status, create_time_ms
         FROM idempotency_keys WHERE key = ?`,
      ),
      insertKey: db.prepare(
        `INSERT INTO idempotency_keys (key, operation, fingerprint, payment_id, status, create_time_ms)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ),
    };
    this.key = this.loadFingerprintKey();
  }

  /** Opens (creating the file and its folder when missing) and migrates the database. */
  static open(file: string): SqlitePaymentStore {
    if (file !== ":memory:") {
      mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    }
    const db = new Database(file);
    try {
      // WAL: readers never block the writer. synchronous stays FULL (the
      // default): a confirmed charge must survive a power cut.
      db.pragma("journal_mode = WAL");
      db.pragma("foreign_keys = ON");
      return new SqlitePaymentStore(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  // Creates what is missing and migrates an older file, in one IMMEDIATE
  // transaction, so that two processes opening the same file cannot both
  // migrate it.
  private static migrate(db: Database.Database): void {
    db.transaction(() => {
      const version = Number(db.pragma("user_version", { simple: true }));
      if (version > SCHEMA_VERSION) {
        throw new Error(`schema version ${version} is newer than this service's (${SCHEMA_VERSION})`);
      }
      db.exec(SCHEMA);
      const columns = db.prepare<[], { name: string; notnull: bigint }>(
        "SELECT name, \"notnull\" FROM pragma_table_info('idempotency_keys')",
      );
      if (columns.all().some((column) => column.name === "payment_id" && Number(column.notnull) !== 0)) {
        db.exec(KEYS_NULLABLE);
      }
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }).immediate();
  }

  // Generated on first open and kept: fingerprints must compare equal after a
  // restart, or a retry after a deploy would be refused as a different request.
  private loadFingerprintKey(): Buffer {
    return this.db.transaction(() => {
      this.statements.insertSetting.run("fingerprint_key", randomBytes(32));
      const row = this.statements.getSetting.get("fingerprint_key");
      if (row === undefined) {
        throw new Error("fingerprint key missing after insert");
      }
      return row.value;
    })();
  }

  transaction<T>(fn: () => T): T {
    // IMMEDIATE takes the write lock up front, so two processes sharing the
    // file cannot both read "no such key" and then both insert.
    return this.db.transaction(fn).immediate();
  }

  fingerprintKey(): Buffer {
    return this.key;
  }

  findKey(key: string): KeyRecord | undefined {
    const row = this.statements.findKey.get(key);
    if (row === undefined) {
      return undefined;
    }
    const createTime = new Date(Number(row.create_time_ms));
    if (row.payment_id === null || row.status === null) {
      // The table's CHECKs allow this only for a charge key, with both null.
      const { key, fingerprint } = row;
      return { key, operation: "charge", fingerprint, paymentId: null, status: null, createTime };
    }
    return {
      key: row.key,
      operation: row.operation,
      fingerprint: row.fingerprint,
      paymentId: row.payment_id,
      status: row.status,
      createTime,
    };
  }

  insertKey(record: KeyRecord): void {
    this.statements.insertKey.run(
      record.key,
      record.operation,
      record.fingerprint,
      record.paymentId,
      record.status,
      BigInt(record.createTime.getTime()),
    );
  }

  getPayment(id: string): Payment | undefined {
    const row = this.statements.getPayment.get(id);
    return row === undefined ? undefined : toPayment(row);
  }

  insertPayment(payment: Payment): void {
    this.statements.insertPayment.run(
      payment.id,
      payment.orderId,
      payment.amount.currencyCode,
      payment.amount.amountMinor,
      payment.status,
      payment.declineReason,
      payment.cardLast4,
      BigInt(payment.createTime.getTime()),
    );
  }

  markRefunded(id: string, reason: string, at: Date): void {
    const result = this.statements.markRefunded.run(reason, BigInt(at.getTime()), id);
    if (Number(result.changes) !== 1) {
      throw new Error(`payment '${id}' is not CHARGED, cannot mark it refunded`);
    }
  }

  close(): void {
    if (this.db.open) {
      this.db.close();
    }
  }
}
