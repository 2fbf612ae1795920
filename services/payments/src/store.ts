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

import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import * as path from "node:path";

import Database from "better-sqlite3";

import type { KeyRecord, Operation, Payment, PaymentStatus, PaymentStore } from "./domain";

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
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    operation TEXT NOT NULL CHECK (operation IN ('charge', 'refund')),
    fingerprint BLOB NOT NULL,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    status TEXT NOT NULL CHECK (status IN ('CHARGED', 'DECLINED', 'REFUNDED')),
    create_time_ms INTEGER NOT NULL
) STRICT;
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
  payment_id: string;
  status: PaymentStatus;
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
    db.exec(SCHEMA);
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
    return {
      key: row.key,
      operation: row.operation,
      fingerprint: row.fingerprint,
      paymentId: row.payment_id,
      status: row.status,
      createTime: new Date(Number(row.create_time_ms)),
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
