// Test fixtures for mTLS: the mesh's certificates made by mesh/certs.py (run
// with the project's Python), clients presenting them, a payments server
// built with mTLS on, and the serial number a new TLS connection is shown.
//
// Loads @grpc/grpc-js: a test that traces requires this file only after it
// has started OpenTelemetry.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import * as tls from "node:tls";

import * as grpc from "@grpc/grpc-js";

import {
  type ChargeRequest,
  type ChargeResponse,
  type GetPaymentResponse,
  PaymentsServiceClient,
} from "../../../gen/ts/shop/payments/v1/payments";
import type { ServerConfig } from "../src/config";
import { HEALTH_SERVICE, REPO_ROOT } from "../src/policy";
import { build, type PaymentsServer } from "../src/server";
import { loadMeshSecurity } from "../src/tls";
import { tempDir, testConfig } from "./helpers";

type Context = { after(fn: () => void): void };

export interface Certs {
  readonly dir: string;
  read(name: string): Buffer;
}

function python(args: string[]): void {
  const interpreter = path.join(REPO_ROOT, ".venv", "bin", "python");
  assert.ok(existsSync(interpreter), `${interpreter} is missing: run make tools`);
  execFileSync(interpreter, args, { cwd: REPO_ROOT, stdio: "pipe" });
}

/**
 * The shop's CA and every service's certificate in a fresh folder, plus for
 * orders one from a rogue CA (`rogue-orders`) and an expired one
 * (`expired-orders`).
 */
export function makeCerts(t: Context): Certs {
  const dir = tempDir(t);
  python(["-m", "mesh.certs", "--dir", dir]);
  python([
    "-c",
    "import sys; from pathlib import Path; from mesh import certs; " +
      "d = Path(sys.argv[1]); certs.write_bad_certificates(d, certs.load(d, 'ca'), 'orders')",
    dir,
  ]);
  return { dir, read: (name) => readFileSync(path.join(dir, name)) };
}

/** `make certs ROTATE=1`: every service certificate issued again under the same CA. */
export function rotate(certs: Certs): void {
  python(["-m", "mesh.certs", "--dir", certs.dir, "--rotate"]);
}

/** Replaces a file as mesh.certs does: a temporary file renamed into place. */
export function replaceFile(file: string, data: string | Buffer): void {
  const temporary = `${file}.tmp`;
  writeFileSync(temporary, data, { mode: 0o600 });
  renameSync(temporary, file);
}

/** The serial number of a PEM certificate, as Node writes it (upper-case hex). */
export function serialOf(pem: Buffer): string {
  return new X509Certificate(pem).serialNumber.toUpperCase();
}

export function mtls(certs: Certs, name: string, ca = "ca.pem"): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(certs.read(ca), certs.read(`${name}.key`), certs.read(`${name}.pem`));
}

/**
 * A server with MESH_MTLS=on over `certs`; `env` adds or overrides MESH_*
 * variables, `server` the test configuration's server part.
 */
export async function startSecure(
  t: Context,
  certs: Certs,
  env: Record<string, string> = {},
  backstopCheckMs?: number,
  server: Partial<ServerConfig> = {},
): Promise<PaymentsServer> {
  const security = loadMeshSecurity({ MESH_MTLS: "on", MESH_CERTS_DIR: certs.dir, ...env });
  const options = backstopCheckMs === undefined ? { security } : { security, backstopCheckMs };
  const payments = await build(testConfig(tempDir(t), server), options);
  t.after(async () => {
    payments.server.forceShutdown();
    payments.store.close();
    await payments.metrics?.close();
  });
  return payments;
}

export interface SecureClient {
  charge(request: ChargeRequest, metadata?: grpc.Metadata): Promise<ChargeResponse>;
  getPayment(id: string): Promise<GetPaymentResponse>;
  health(): Promise<string>;
  close(): void;
}

type Callback<T> = (error: grpc.ServiceError | null, response: T) => void;

function settle<T>(resolve: (value: T) => void, reject: (error: grpc.ServiceError) => void): Callback<T> {
  return (error, response) => (error === null ? resolve(response) : reject(error));
}

/** Payments and health clients on 127.0.0.1:`port` with `credentials`. */
export function secureClient(t: Context, port: number, credentials: grpc.ChannelCredentials): SecureClient {
  // The server's certificate names localhost (and 127.0.0.1, but Node warns
  // when a TLS server name is an IP address); the name is also sent as SNI.
  const options = { "grpc.ssl_target_name_override": "localhost" };
  const payments = new PaymentsServiceClient(`127.0.0.1:${port}`, credentials, options);
  const health = new grpc.Client(`127.0.0.1:${port}`, credentials, options);
  t.after(() => {
    payments.close();
    health.close();
  });
  const deadline = (): grpc.CallOptions => ({ deadline: Date.now() + 10_000 });
  return {
    charge: (request, metadata = new grpc.Metadata()) =>
      new Promise((resolve, reject) => payments.charge(request, metadata, deadline(), settle(resolve, reject))),
    getPayment: (id) =>
      new Promise((resolve, reject) =>
        payments.getPayment({ id }, new grpc.Metadata(), deadline(), settle(resolve, reject)),
      ),
    // HealthCheckRequest { service: "" } is an empty message, and the status
    // is field 1 (a varint): no generated code needed.
    health: () =>
      new Promise((resolve, reject) =>
        health.makeUnaryRequest(
          `/${HEALTH_SERVICE}/Check`,
          () => Buffer.alloc(0),
          (bytes: Buffer) => bytes,
          {},
          new grpc.Metadata(),
          deadline(),
          (error: grpc.ServiceError | null, response?: Buffer) =>
            error === null ? resolve(response?.[1] === 1 ? "SERVING" : `status ${response?.[1]}`) : reject(error),
        ),
      ),
    close: () => {
      payments.close();
      health.close();
    },
  };
}

/**
 * The serial number of the certificate the server shows a new TLS connection
 * from a client presenting `client`'s certificate; with `sni` false the
 * client sends no server name.
 */
export function presentedSerial(certs: Certs, port: number, client: string, sni = true): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      ca: certs.read("ca.pem"),
      key: certs.read(`${client}.key`),
      cert: certs.read(`${client}.pem`),
      ALPNProtocols: ["h2"],
      ...(sni ? { servername: "localhost" } : {}),
      checkServerIdentity: () => undefined,
    });
    socket.once("secureConnect", () => {
      const serial = socket.getPeerCertificate().serialNumber.toUpperCase();
      socket.destroy();
      resolve(serial);
    });
    socket.once("error", reject);
  });
}
