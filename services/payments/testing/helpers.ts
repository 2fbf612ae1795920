// Shared test fixtures: temporary folders, a test configuration, valid
// requests, and promise wrappers for the generated grpc-js client. Kept out
// of test/, where `node --test` would run this file as a test file too.
//
// Loads @grpc/grpc-js: telemetry.test.ts requires this file only after it
// has started OpenTelemetry.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

import * as grpc from "@grpc/grpc-js";

import {
  type ChargeRequest,
  type ChargeResponse,
  type GetPaymentResponse,
  type RefundRequest,
  type RefundResponse,
  type ResolveChargeResponse,
  PaymentsServiceClient,
} from "../../../gen/ts/shop/payments/v1/payments";
import { loadConfig, type PaymentsConfig, type ServerConfig } from "../src/config";
import type { ChargeInput } from "../src/domain";
import { TEST_CARDS } from "../src/processor";

/** A fresh folder, removed when the test ends. */
export function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), "payments-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const NEXT_YEAR = new Date().getUTCFullYear() + 1;

export function testConfig(dir: string, server: Partial<ServerConfig> = {}): PaymentsConfig {
  return {
    server: {
      listenAddr: "127.0.0.1:0",
      drainSeconds: 0,
      graceSeconds: 5,
      faults: { delayMs: 0, errorPercent: 0 },
      ...server,
    },
    dbPath: path.join(dir, "payments.db"),
    protoDir: loadConfig({}).protoDir,
    logLevel: "ERROR",
    tracing: false,
    tracesExporter: "otlp",
  };
}

/** A valid charge input for the domain; `overrides` replace top-level fields. */
export function chargeInput(overrides: Partial<ChargeInput> = {}): ChargeInput {
  return {
    idempotencyKey: "key-1",
    orderId: "order-1",
    amount: { currencyCode: "EUR", amountMinor: 1234n },
    card: { number: TEST_CARDS.charged, expiryMonth: 12, expiryYear: NEXT_YEAR, cvc: "123", holderName: "Ada Lovelace" },
    ...overrides,
  };
}

/** The same, as a gRPC request message. */
export function chargeRequest(overrides: Partial<ChargeRequest> = {}): ChargeRequest {
  const input = chargeInput();
  return { ...input, amount: input.amount, card: input.card, ...overrides } as ChargeRequest;
}

export interface Client {
  readonly raw: PaymentsServiceClient;
  charge(request: ChargeRequest): Promise<ChargeResponse>;
  refund(request: RefundRequest): Promise<RefundResponse>;
  getPayment(id: string): Promise<GetPaymentResponse>;
  resolveCharge(idempotencyKey: string): Promise<ResolveChargeResponse>;
  close(): void;
}

function settle<T>(resolve: (value: T) => void, reject: (error: grpc.ServiceError) => void) {
  return (error: grpc.ServiceError | null, response: T): void => (error === null ? resolve(response) : reject(error));
}

export function connect(port: number): Client {
  const raw = new PaymentsServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return {
    raw,
    charge: (request) => new Promise((resolve, reject) => raw.charge(request, settle(resolve, reject))),
    refund: (request) => new Promise((resolve, reject) => raw.refund(request, settle(resolve, reject))),
    getPayment: (id) => new Promise((resolve, reject) => raw.getPayment({ id }, settle(resolve, reject))),
    resolveCharge: (idempotencyKey) =>
      new Promise((resolve, reject) => raw.resolveCharge({ idempotencyKey }, settle(resolve, reject))),
    close: () => raw.close(),
  };
}

/** The error a promise was rejected with; fails when it resolved. */
export async function rejection(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error("expected the call to fail, it succeeded");
}

const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): unknown => JSON.parse(bytes.toString()),
};

/** A method of a test-only service whose messages are JSON: any shape, no generated code. */
export function jsonMethod(
  service: string,
  name: string,
  requestStream: boolean,
  responseStream: boolean,
): grpc.MethodDefinition<unknown, unknown> {
  return {
    path: `/${service}/${name}`,
    requestStream,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  };
}
