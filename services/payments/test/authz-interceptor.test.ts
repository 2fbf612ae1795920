// The authorization interceptor in a real grpc-js server over mTLS, with
// certificates from the mesh's own CA (mesh/certs.py, run with the project's
// Python): orders may Charge but not GetPayment, the gateway may not call
// payments at all, health is open to every caller (even one with no
// identity), and a client certificate from another CA never gets past the
// handshake. Denials are PERMISSION_DENIED naming the caller and the method,
// and are logged.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { test, type TestContext } from "node:test";

import * as grpc from "@grpc/grpc-js";
import { HealthImplementation, service as healthService } from "grpc-health-check";

import { PaymentStatus, PaymentsServiceClient, PaymentsServiceService } from "../../../gen/ts/shop/payments/v1/payments";
import { authorizationInterceptor } from "../src/authz";
import { DEFAULT_POLICY_FILE, REPO_ROOT } from "../src/policy";
import { loadPolicy } from "../src/policy-file";
import { Payments, type PaymentsApi } from "../src/domain";
import type { Fields, Logger } from "../src/logging";
import { paymentsService } from "../src/service";
import { SqlitePaymentStore } from "../src/store";
import { chargeRequest, rejection, tempDir } from "../testing/helpers";

const LIMIT = { timeout: 60_000 };
const PAYMENTS = "/shop.payments.v1.PaymentsService";

interface Certs {
  readonly dir: string;
  read(name: string): Buffer;
}

/** The shop's CA and service certificates, and a rogue one for orders, made by mesh/certs.py. */
function makeCerts(t: TestContext): Certs {
  const python = path.join(REPO_ROOT, ".venv", "bin", "python");
  assert.ok(existsSync(python), `${python} is missing: run make tools`);
  const dir = tempDir(t);
  execFileSync(python, ["-m", "mesh.certs", "--dir", dir], { cwd: REPO_ROOT, stdio: "pipe" });
  execFileSync(
    python,
    [
      "-c",
      "import sys; from pathlib import Path; from mesh import certs; " +
        "d = Path(sys.argv[1]); certs.write_bad_certificates(d, certs.load(d, 'ca'), 'orders')",
      dir,
    ],
    { cwd: REPO_ROOT, stdio: "pipe" },
  );
  return { dir, read: (name) => readFileSync(path.join(dir, name)) };
}

interface Logged {
  readonly message: string;
  readonly fields: Fields | undefined;
}

function capturingLogger(lines: Logged[]): Logger {
  const keep = (message: string, fields?: Fields): void => {
    lines.push({ message, fields });
  };
  return { debug: keep, info: keep, warning: keep, error: (message, _error, fields) => keep(message, fields) };
}

interface Started {
  readonly port: number;
  /** The PaymentsApi methods that ran, in order. */
  readonly reached: string[];
  readonly logged: Logged[];
}

/** A payments server (the real service over a temporary store) with the interceptor, on 127.0.0.1:0. */
async function start(t: TestContext, credentials: grpc.ServerCredentials): Promise<Started> {
  const store = SqlitePaymentStore.open(path.join(tempDir(t), "payments.db"));
  const payments = new Payments(store);
  const reached: string[] = [];
  const api: PaymentsApi = {
    charge: (request) => (reached.push("charge"), payments.charge(request)),
    refund: (request) => (reached.push("refund"), payments.refund(request)),
    getPayment: (id) => (reached.push("getPayment"), payments.getPayment(id)),
    resolveCharge: (key) => (reached.push("resolveCharge"), payments.resolveCharge(key)),
  };
  const logged: Logged[] = [];
  const policy = loadPolicy(DEFAULT_POLICY_FILE);
  const interceptor = authorizationInterceptor(policy, "payments", capturingLogger(logged));
  const server = new grpc.Server({ interceptors: [interceptor] });
  server.addService(PaymentsServiceService, paymentsService(api, { faults: { delayMs: 0, errorPercent: 0 } }));
  new HealthImplementation({ "": "SERVING" }).addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) => (error === null ? resolve(bound) : reject(error))),
  );
  t.after(() => {
    server.forceShutdown();
    store.close();
  });
  return { port, reached, logged };
}

type Callback<T> = (error: grpc.ServiceError | null, response: T) => void;

interface Caller {
  charge(key: string): Promise<unknown>;
  getPayment(id: string): Promise<unknown>;
  health(): Promise<string>;
}

function caller(t: TestContext, port: number, credentials: grpc.ChannelCredentials): Caller {
  // The server's certificate names localhost (and 127.0.0.1, but Node warns
  // when a TLS server name is an IP address).
  const options = { "grpc.ssl_target_name_override": "localhost" };
  const payments = new PaymentsServiceClient(`127.0.0.1:${port}`, credentials, options);
  const HealthClient = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  const health = new HealthClient(`127.0.0.1:${port}`, credentials, options) as unknown as grpc.Client & {
    check(request: { service: string }, callback: Callback<{ status: string }>): void;
  };
  t.after(() => {
    payments.close();
    health.close();
  });
  const deadline = () => ({ deadline: Date.now() + 10_000 });
  return {
    charge: (key) =>
      new Promise((resolve, reject) =>
        payments.charge(chargeRequest({ idempotencyKey: key }), new grpc.Metadata(), deadline(), (error, response) =>
          error === null ? resolve(response) : reject(error),
        ),
      ),
    getPayment: (id) =>
      new Promise((resolve, reject) =>
        payments.getPayment({ id }, new grpc.Metadata(), deadline(), (error, response) =>
          error === null ? resolve(response) : reject(error),
        ),
      ),
    health: () =>
      new Promise((resolve, reject) =>
        health.check({ service: "" }, (error, response) => (error === null ? resolve(response.status) : reject(error))),
      ),
  };
}

function mtls(certs: Certs, name: string, ca = "ca.pem"): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(certs.read(ca), certs.read(`${name}.key`), certs.read(`${name}.pem`));
}

async function denied(call: Promise<unknown>, details: string): Promise<void> {
  const error = await rejection(call);
  assert.equal(error.code, grpc.status.PERMISSION_DENIED, error.message);
  assert.equal(error.details, details);
}

test("over mTLS the policy decides by the peer certificate's identity", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await start(
    t,
    grpc.ServerCredentials.createSsl(
      certs.read("ca.pem"),
      [{ private_key: certs.read("payments.key"), cert_chain: certs.read("payments.pem") }],
      true,
    ),
  );

  const orders = caller(t, server.port, mtls(certs, "orders"));
  const charged = (await orders.charge("key-orders")) as { payment?: { id: string; status: PaymentStatus } };
  assert.equal(charged.payment?.status, PaymentStatus.PAYMENT_STATUS_CHARGED);
  await denied(
    orders.getPayment(charged.payment?.id ?? ""),
    `caller spiffe://shop.local/orders may not call ${PAYMENTS}/GetPayment`,
  );
  assert.equal(await orders.health(), "SERVING");

  const gateway = caller(t, server.port, mtls(certs, "gateway"));
  await denied(gateway.charge("key-gateway"), `caller spiffe://shop.local/gateway may not call ${PAYMENTS}/Charge`);
  await denied(gateway.getPayment("pay-1"), `caller spiffe://shop.local/gateway may not call ${PAYMENTS}/GetPayment`);
  assert.equal(await gateway.health(), "SERVING");

  // Only the allowed call reached the service; each denial was logged.
  assert.deepEqual(server.reached, ["charge"]);
  assert.deepEqual(
    server.logged.map(({ message, fields }) => [message, fields?.["caller"], fields?.["method"]]),
    [
      [
        `caller spiffe://shop.local/orders may not call ${PAYMENTS}/GetPayment`,
        "spiffe://shop.local/orders",
        `${PAYMENTS}/GetPayment`,
      ],
      [
        `caller spiffe://shop.local/gateway may not call ${PAYMENTS}/Charge`,
        "spiffe://shop.local/gateway",
        `${PAYMENTS}/Charge`,
      ],
      [
        `caller spiffe://shop.local/gateway may not call ${PAYMENTS}/GetPayment`,
        "spiffe://shop.local/gateway",
        `${PAYMENTS}/GetPayment`,
      ],
    ],
  );

  // Orders' identity from another CA is refused at the handshake, before any policy.
  const rogue = caller(t, server.port, mtls(certs, "rogue-orders"));
  const refused = await rejection(rogue.charge("key-rogue"));
  assert.equal(refused.code, grpc.status.UNAVAILABLE, refused.message);
  assert.deepEqual(server.reached, ["charge"]);
});

test("a caller with no identity (plaintext) gets health only", LIMIT, async (t) => {
  const server = await start(t, grpc.ServerCredentials.createInsecure());
  const anonymous = caller(t, server.port, grpc.credentials.createInsecure());
  assert.equal(await anonymous.health(), "SERVING");
  await denied(anonymous.charge("key-anonymous"), `caller no identity may not call ${PAYMENTS}/Charge`);
  assert.deepEqual(server.reached, []);
  assert.equal(server.logged.length, 1);
  assert.equal(server.logged[0]?.fields?.["caller"], null);
});
