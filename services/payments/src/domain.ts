// The payments logic: charge, refund, get and resolve, idempotent by key. No gRPC here.
//
// Idempotency. Charge and Refund share one namespace of client-chosen keys.
// A key's first request is remembered by a fingerprint: an HMAC-SHA256 over
// the canonical request (operation name included, so a charge key reused for
// a refund is a different request) under a random key kept in the database.
// HMAC rather than a plain hash because the charge fingerprint covers the card
// number and CVC: a plain SHA-256 of a 16-digit number with a known prefix is
// brute-forced in seconds, an HMAC without its key is not. A repeat with the
// same fingerprint gets the first result back; another request under the same
// key gets FailedPrecondition.
//
// Exactly once. The key check, the processor call and both inserts run in one
// synchronous better-sqlite3 transaction: Node cannot interleave another
// request in the middle, and the IMMEDIATE transaction keeps a second process
// on the same file out too, so concurrent retries of one key charge once.
// A transient processor failure throws inside the transaction: nothing is
// stored, and a retry with the same key runs again.
//
// Resolving a lost charge. A caller that lost a Charge's outcome (it timed
// out, or restarted without the card) asks ResolveCharge about its key. In
// one transaction, which therefore falls wholly before or after any Charge
// with that key: a key a Charge used answers with its payment as it is now;
// a free key is retired, a key row with no payment, so that a late or
// repeated Charge with it is refused before the processor is asked and no
// money moves. After that answer, "no charge" stays true for good.

import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";

import { type CardInput, last4, validateCard } from "./card";
import { FailedPrecondition, InvalidArgument, NotFound, Unavailable } from "./errors";
import { authorize } from "./processor";

export type PaymentStatus = "CHARGED" | "DECLINED" | "REFUNDED";

/** Money in the currency's minor unit; bigint end to end, never a float. */
export interface Money {
  readonly currencyCode: string;
  readonly amountMinor: bigint;
}

export interface Payment {
  readonly id: string;
  readonly orderId: string;
  readonly amount: Money;
  readonly status: PaymentStatus;
  /** Empty unless status is DECLINED. */
  readonly declineReason: string;
  readonly cardLast4: string;
  readonly createTime: Date;
}

export interface ChargeInput {
  readonly idempotencyKey: string;
  readonly orderId: string;
  readonly amount: Money | undefined;
  readonly card: CardInput | undefined;
}

export interface RefundInput {
  readonly idempotencyKey: string;
  readonly paymentId: string;
  readonly reason: string;
}

export type Operation = "charge" | "refund";

/** What a key's first request was and what it returned. */
export interface UsedKey {
  readonly key: string;
  readonly operation: Operation;
  readonly fingerprint: Buffer;
  readonly paymentId: string;
  /** The payment's status in the first response, replayed to repeats. */
  readonly status: PaymentStatus;
  readonly createTime: Date;
}

/** A charge key that ResolveCharge found unused and retired: no payment, and none ever. */
export interface RetiredKey {
  readonly key: string;
  readonly operation: "charge";
  /** RETIRED_FINGERPRINT, which no request's fingerprint (32 bytes) can equal. */
  readonly fingerprint: Buffer;
  readonly paymentId: null;
  readonly status: null;
  readonly createTime: Date;
}

export type KeyRecord = UsedKey | RetiredKey;

/**
 * The fingerprint of a retired key. Request fingerprints are HMAC-SHA256
 * digests, always 32 bytes, so this 7-byte marker never equals one; replay()
 * checks for a retired key before comparing fingerprints anyway.
 */
export const RETIRED_FINGERPRINT: Buffer = Buffer.from("retired");

/** The storage the domain needs; store.ts implements it over SQLite. */
export interface PaymentStore {
  /** Runs `fn` (synchronous) in one write transaction; a throw rolls it back. */
  transaction<T>(fn: () => T): T;
  /** The HMAC key of fingerprints, generated once per database. */
  fingerprintKey(): Buffer;
  findKey(key: string): KeyRecord | undefined;
  insertKey(record: KeyRecord): void;
  getPayment(id: string): Payment | undefined;
  insertPayment(payment: Payment): void;
  markRefunded(id: string, reason: string, at: Date): void;
}

/** The four operations, as the gRPC layer calls them; tests stub this. */
export interface PaymentsApi {
  charge(request: ChargeInput): Payment | Promise<Payment>;
  refund(request: RefundInput): Payment | Promise<Payment>;
  getPayment(id: string): Payment | Promise<Payment>;
  /** The payment the Charge with `idempotencyKey` made, or undefined (and the key retired) if none was. */
  resolveCharge(idempotencyKey: string): Payment | undefined | Promise<Payment | undefined>;
}

export const MAX_KEY_LENGTH = 128;

function required(field: string, value: string): void {
  if (value === "") {
    throw new InvalidArgument(field, "is required");
  }
}

function bounded(field: string, value: string): void {
  required(field, value);
  // Characters, not UTF-16 units, as the other services count them.
  if (value.length > MAX_KEY_LENGTH && [...value].length > MAX_KEY_LENGTH) {
    throw new InvalidArgument(field, `must be at most ${MAX_KEY_LENGTH} characters`);
  }
}

/** Throws InvalidArgument for the first problem of a charge request, in contract order. */
export function validateCharge(
  request: ChargeInput,
  now: Date,
): asserts request is ChargeInput & { amount: Money; card: CardInput } {
  bounded("idempotency_key", request.idempotencyKey);
  bounded("order_id", request.orderId);
  const amount = request.amount;
  if (amount === undefined) {
    throw new InvalidArgument("amount", "is required");
  }
  if (!/^[A-Z]{3}$/.test(amount.currencyCode)) {
    throw new InvalidArgument("amount.currency_code", "must be three upper-case letters (ISO 4217)");
  }
  if (amount.amountMinor <= 0n) {
    throw new InvalidArgument("amount.amount_minor", "must be positive");
  }
  validateCard(request.card, now);
}

export function validateRefund(request: RefundInput): void {
  bounded("idempotency_key", request.idempotencyKey);
  required("payment_id", request.paymentId);
}

export interface PaymentsOptions {
  readonly now?: () => Date;
  readonly newId?: () => string;
}

export class Payments implements PaymentsApi {
  private readonly hmacKey: Buffer;
  private readonly now: () => Date;
  private readonly newId: () => string;

  constructor(
    private readonly store: PaymentStore,
    options: PaymentsOptions = {},
  ) {
    this.hmacKey = store.fingerprintKey();
    this.now = options.now ?? (() => new Date());
    this.newId = options.newId ?? (() => `pay_${randomUUID()}`);
  }

  charge(request: ChargeInput): Payment {
    const now = this.now();
    validateCharge(request, now);
    const { amount, card } = request;
    const fingerprint = this.fingerprint([
      "charge",
      request.orderId,
      amount.currencyCode,
      amount.amountMinor.toString(),
      card.number,
      card.expiryMonth,
      card.expiryYear,
      card.cvc,
      card.holderName,
    ]);
    return this.store.transaction(() => {
      const previous = this.store.findKey(request.idempotencyKey);
      if (previous !== undefined) {
        return this.replay(previous, fingerprint);
      }
      const decision = authorize(card.number);
      if (decision.outcome === "unavailable") {
        throw new Unavailable("the card processor is unavailable; retry with the same idempotency_key");
      }
      const payment: Payment = {
        id: this.newId(),
        orderId: request.orderId,
        amount: { currencyCode: amount.currencyCode, amountMinor: amount.amountMinor },
        status: decision.outcome === "charged" ? "CHARGED" : "DECLINED",
        declineReason: decision.outcome === "declined" ? decision.reason : "",
        cardLast4: last4(card.number),
        createTime: now,
      };
      this.store.insertPayment(payment);
      this.remember(request.idempotencyKey, "charge", fingerprint, payment, now);
      return payment;
    });
  }

  refund(request: RefundInput): Payment {
    validateRefund(request);
    const now = this.now();
    const fingerprint = this.fingerprint(["refund", request.paymentId, request.reason]);
    return this.store.transaction(() => {
      const previous = this.store.findKey(request.idempotencyKey);
      if (previous !== undefined) {
        return this.replay(previous, fingerprint);
      }
      const payment = this.store.getPayment(request.paymentId);
      if (payment === undefined) {
        throw new NotFound(`no payment with id '${request.paymentId}'`);
      }
      let refunded = payment;
      switch (payment.status) {
        case "DECLINED":
          throw new FailedPrecondition(`payment '${payment.id}' was declined: there is nothing to refund`);
        case "CHARGED":
          this.store.markRefunded(payment.id, request.reason, now);
          refunded = { ...payment, status: "REFUNDED" };
          break;
        case "REFUNDED":
          // Already refunded (by another key): the contract returns it unchanged.
          break;
      }
      this.remember(request.idempotencyKey, "refund", fingerprint, refunded, now);
      return refunded;
    });
  }

  getPayment(id: string): Payment {
    required("id", id);
    const payment = this.store.getPayment(id);
    if (payment === undefined) {
      throw new NotFound(`no payment with id '${id}'`);
    }
    return payment;
  }

  /**
   * Settles a Charge whose outcome the caller lost: the payment it made, as
   * it is now (CHARGED, DECLINED or since REFUNDED), or undefined after
   * retiring the key, so that no Charge with it will ever move money.
   */
  resolveCharge(idempotencyKey: string): Payment | undefined {
    bounded("idempotency_key", idempotencyKey);
    const now = this.now();
    return this.store.transaction(() => {
      const previous = this.store.findKey(idempotencyKey);
      if (previous === undefined) {
        this.store.insertKey({
          key: idempotencyKey,
          operation: "charge",
          fingerprint: RETIRED_FINGERPRINT,
          paymentId: null,
          status: null,
          createTime: now,
        });
        return undefined;
      }
      if (previous.operation === "refund") {
        throw new FailedPrecondition(`idempotency_key '${idempotencyKey}' was used by a Refund, not a Charge`);
      }
      if (previous.paymentId === null) {
        return undefined; // retired by an earlier ResolveCharge: the same answer again
      }
      return this.paymentOf(previous);
    });
  }

  // A JSON array is an unambiguous encoding: no choice of field values can
  // make two different requests serialise to the same text.
  private fingerprint(parts: readonly (string | number)[]): Buffer {
    return createHmac("sha256", this.hmacKey).update(JSON.stringify(parts)).digest();
  }

  private remember(key: string, operation: Operation, fingerprint: Buffer, payment: Payment, now: Date): void {
    this.store.insertKey({ key, operation, fingerprint, paymentId: payment.id, status: payment.status, createTime: now });
  }

  /** The first result again, or FailedPrecondition when the key is retired or the request differs. */
  private replay(previous: KeyRecord, fingerprint: Buffer): Payment {
    if (previous.paymentId === null) {
      throw new FailedPrecondition(
        `idempotency_key '${previous.key}' was retired by ResolveCharge; no charge was made, ` +
          "and none will be with this key",
      );
    }
    const same = previous.fingerprint.length === fingerprint.length && timingSafeEqual(previous.fingerprint, fingerprint);
    if (!same) {
      throw new FailedPrecondition(`idempotency_key '${previous.key}' was already used with a different request`);
    }
    // The payment may have moved on since (a charge later refunded): a repeat
    // still gets the response the first request got, as the contract says.
    return { ...this.paymentOf(previous), status: previous.status };
  }

  private paymentOf(used: UsedKey): Payment {
    const payment = this.store.getPayment(used.paymentId);
    if (payment === undefined) {
      throw new Error(`idempotency key '${used.key}' refers to missing payment '${used.paymentId}'`);
    }
    return payment;
  }
}
