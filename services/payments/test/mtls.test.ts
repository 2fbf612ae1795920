// The payments server with MESH_MTLS=on, over real sockets on 127.0.0.1 with
// certificates from the mesh's own CA (mesh/certs.py): the handshake refuses
// a client without a certificate, with one from another CA or an expired
// one; the policy decides by the client certificate's identity (orders may
// Charge, not GetPayment; the gateway may not call payments; health is open);
// x-shop-subject is the gateway's alone; a rotation is picked up by the next
// connection without a restart, and a half-written or broken pair keeps the
// certificate in use. Also: the MESH_* configuration and its errors.

import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { PaymentStatus } from "../../../gen/ts/shop/payments/v1/payments";
import { SUBJECT_HEADER } from "../src/authz";
import { ConfigError } from "../src/config";
import { configureLogging } from "../src/logging";
import { DEFAULT_POLICY_FILE } from "../src/policy";
import { DEFAULT_CERTS_DIR, loadMeshSecurity, MTLS_DEFAULT } from "../src/tls";
import { chargeRequest, rejection, tempDir } from "../testing/helpers";
import {
  type Certs,
  makeCerts,
  mtls,
  presentedSerial,
  replaceFile,
  rotate,
  secureClient,
  serialOf,
  startSecure,
} from "../testing/mesh";

const LIMIT = { timeout: 60_000 };
const PAYMENTS = "/shop.payments.v1.PaymentsService";

// Every log line of this process, parsed, to check the warnings.
const logged: { level: string; message: string; [field: string]: unknown }[] = [];
configureLogging("INFO", (line) => logged.push(JSON.parse(line) as (typeof logged)[number]));

function warnings(): string[] {
  return logged.filter((line) => line.level === "WARNING").map((line) => line.message);
}

async function denied(call: Promise<unknown>, details: string): Promise<void> {
  const error = await rejection(call);
  assert.equal(error.code, grpc.status.PERMISSION_DENIED, error.message);
  assert.equal(error.details, details);
}

async function refusedInHandshake(call: Promise<unknown>): Promise<void> {
  const error = await rejection(call);
  assert.equal(error.code, grpc.status.UNAVAILABLE, error.message);
}

async function poll(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) {
      assert.fail(`timed out waiting until ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("the handshake refuses no certificate, another CA's and an expired one", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startSecure(t, certs);

  const anonymous = secureClient(t, server.port, grpc.credentials.createSsl(certs.read("ca.pem")));
  await refusedInHandshake(anonymous.health());
  await refusedInHandshake(anonymous.charge(chargeRequest({ idempotencyKey: "anonymous" })));
  const rogue = secureClient(t, server.port, mtls(certs, "rogue-orders"));
  await refusedInHandshake(rogue.charge(chargeRequest({ idempotencyKey: "rogue" })));
  const expired = secureClient(t, server.port, mtls(certs, "expired-orders"));
  await refusedInHandshake(expired.charge(chargeRequest({ idempotencyKey: "expired" })));
  // A plaintext client does not get in either.
  const plaintext = secureClient(t, server.port, grpc.credentials.createInsecure());
  await refusedInHandshake(plaintext.health());

  // None of them reached the store, and a valid caller still does.
  const orders = secureClient(t, server.port, mtls(certs, "orders"));
  assert.equal(await orders.health(), "SERVING");
  for (const key of ["anonymous", "rogue", "expired"]) {
    assert.equal(server.store.findKey(key), undefined, key);
  }
});

test("the policy decides by the client certificate's identity; health is open", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startSecure(t, certs);
  logged.length = 0;

  const orders = secureClient(t, server.port, mtls(certs, "orders"));
  const charged = await orders.charge(chargeRequest({ idempotencyKey: "key-orders" }));
  assert.equal(charged.payment?.status, PaymentStatus.PAYMENT_STATUS_CHARGED);
  await denied(
    orders.getPayment(charged.payment?.id ?? ""),
    `caller spiffe://shop.local/orders may not call ${PAYMENTS}/GetPayment`,
  );
  assert.equal(await orders.health(), "SERVING");

  const gateway = secureClient(t, server.port, mtls(certs, "gateway"));
  await denied(
    gateway.charge(chargeRequest({ idempotencyKey: "key-gateway" })),
    `caller spiffe://shop.local/gateway may not call ${PAYMENTS}/Charge`,
  );
  assert.equal(await gateway.health(), "SERVING");

  // Server reflection (a bidi stream) is closed: the shop's policy does not list it.
  const reflection = new grpc.Client(`127.0.0.1:${server.port}`, mtls(certs, "orders"), {
    "grpc.ssl_target_name_override": "localhost",
  });
  t.after(() => reflection.close());
  const stream = reflection.makeBidiStreamRequest(
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    (bytes: Buffer) => bytes,
    (bytes: Buffer) => bytes,
  );
  const ended = new Promise<grpc.ServiceError>((resolve) => stream.on("error", resolve));
  stream.on("data", () => undefined);
  stream.write(Buffer.alloc(0));
  stream.end();
  const closed = await ended;
  assert.equal(closed.code, grpc.status.PERMISSION_DENIED);
  assert.equal(
    closed.details,
    "caller spiffe://shop.local/orders may not call /grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  );

  // One WARNING line per denial, with the caller and the method.
  const denials = logged.filter((line) => line.level === "WARNING");
  assert.deepEqual(
    denials.map((line) => [line.message, line["caller"], line["method"], line["target"]]),
    [
      [
        `permission denied: caller spiffe://shop.local/orders may not call ${PAYMENTS}/GetPayment`,
        "spiffe://shop.local/orders",
        `${PAYMENTS}/GetPayment`,
        "payments",
      ],
      [
        `permission denied: caller spiffe://shop.local/gateway may not call ${PAYMENTS}/Charge`,
        "spiffe://shop.local/gateway",
        `${PAYMENTS}/Charge`,
        "payments",
      ],
      [
        "permission denied: caller spiffe://shop.local/orders may not call " +
          "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "spiffe://shop.local/orders",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "payments",
      ],
    ],
  );
});

test("x-shop-subject is accepted from the gateway only", LIMIT, async (t) => {
  const certs = makeCerts(t);
  // A policy that lets the gateway charge too, to see the header pass from it.
  const policyFile = path.join(tempDir(t), "policy.yaml");
  writeFileSync(
    policyFile,
    [
      "version: 1",
      "trust_domain: shop.local",
      "services:",
      "  payments:",
      "    - callers: [orders, gateway]",
      '      methods: ["shop.payments.v1.PaymentsService/Charge"]',
      "",
    ].join("\n"),
  );
  const server = await startSecure(t, certs, { MESH_POLICY_FILE: policyFile });
  const subject = new grpc.Metadata();
  subject.set(SUBJECT_HEADER, "customer-1");

  const orders = secureClient(t, server.port, mtls(certs, "orders"));
  await denied(
    orders.charge(chargeRequest({ idempotencyKey: "orders-subject" }), subject),
    `caller spiffe://shop.local/orders may not send x-shop-subject (only spiffe://shop.local/gateway may) ` +
      `calling ${PAYMENTS}/Charge`,
  );
  await orders.charge(chargeRequest({ idempotencyKey: "orders-plain" }));

  const gateway = secureClient(t, server.port, mtls(certs, "gateway"));
  await gateway.charge(chargeRequest({ idempotencyKey: "gateway-subject" }), subject);

  // With the shop's own policy the gateway may not charge at all: that is
  // the reason given, whatever the header.
  const shop = await startSecure(t, certs, { MESH_POLICY_FILE: DEFAULT_POLICY_FILE });
  const shopOrders = secureClient(t, shop.port, mtls(certs, "orders"));
  await denied(
    shopOrders.getPayment("pay_1"),
    `caller spiffe://shop.local/orders may not call ${PAYMENTS}/GetPayment`,
  );
});

// The backstop check, a timer, is pushed out of the way where a test means
// to see the check made at a handshake.
const NO_BACKSTOP_MS = 3_600_000;

test("a rotation reaches the next connection; open ones keep working", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startSecure(t, certs, {}, NO_BACKSTOP_MS);
  logged.length = 0;
  const before = serialOf(certs.read("payments.pem"));
  assert.equal(await presentedSerial(certs, server.port, "orders"), before);
  const open = secureClient(t, server.port, mtls(certs, "orders"));
  await open.charge(chargeRequest({ idempotencyKey: "before-rotation" }));

  rotate(certs);
  const after = serialOf(certs.read("payments.pem"));
  assert.notEqual(after, before);

  // The first new connection after the files changed is shown the new one.
  assert.equal(await presentedSerial(certs, server.port, "orders"), after);
  assert.equal(server.reloader?.loads, 2);
  assert.ok(
    logged.some((line) => line.level === "INFO" && line.message === "loaded a new certificate for payments"),
    JSON.stringify(logged),
  );
  // A client sending no server name gets the reloaded default as well (the
  // check at the named handshake pushed it to the listening server).
  assert.equal(await presentedSerial(certs, server.port, "orders", false), after);

  // Calls succeed on a new connection (orders' certificate was rotated too)
  // and on the one opened before.
  const fresh = secureClient(t, server.port, mtls(certs, "orders"));
  await fresh.charge(chargeRequest({ idempotencyKey: "after-rotation" }));
  await open.charge(chargeRequest({ idempotencyKey: "open-connection" }));
});

test("without a handshake asking, a rotation is picked up by the backstop check", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startSecure(t, certs, {}, 100);
  rotate(certs);
  const after = serialOf(certs.read("payments.pem"));
  // Only clients that send no server name: the reload comes from the timer.
  await poll("a client without SNI sees the new certificate", async () => {
    return (await presentedSerial(certs, server.port, "orders", false)) === after;
  });
});

test("a mismatched or broken pair keeps the certificate in use", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const server = await startSecure(t, certs, {}, NO_BACKSTOP_MS);
  const original = serialOf(certs.read("payments.pem"));
  logged.length = 0;

  // Half a rotation: a new key, the old certificate.
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  replaceFile(path.join(certs.dir, "payments.key"), privateKey.export({ type: "pkcs8", format: "pem" }));
  const started = Date.now();
  assert.equal(await presentedSerial(certs, server.port, "orders"), original);
  // It was read again a few times (5 reads, 20 ms apart) before giving up.
  assert.ok(Date.now() - started >= 60, `gave up after ${Date.now() - started} ms`);
  const orders = secureClient(t, server.port, mtls(certs, "orders"));
  await orders.charge(chargeRequest({ idempotencyKey: "mismatched" }));
  assert.ok(
    warnings().some((message) => message.startsWith("keeping the current certificate of payments:")),
    JSON.stringify(warnings()),
  );
  assert.equal(server.reloader?.loads, 1);

  // A garbage certificate is kept out the same way.
  replaceFile(path.join(certs.dir, "payments.pem"), "not a certificate\n");
  assert.equal(await presentedSerial(certs, server.port, "orders"), original);
  const again = secureClient(t, server.port, mtls(certs, "orders"));
  await again.charge(chargeRequest({ idempotencyKey: "garbage" }));
  assert.equal(server.reloader?.loads, 1);

  // A complete rotation afterwards is picked up.
  rotate(certs);
  assert.equal(await presentedSerial(certs, server.port, "orders"), serialOf(certs.read("payments.pem")));
  assert.equal(server.reloader?.loads, 2);
});

// --- configuration -------------------------------------------------------------

function configError(env: Record<string, string>): string {
  try {
    loadMeshSecurity(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.message;
  }
  return assert.fail("expected a ConfigError");
}

test("MESH_MTLS takes the flag words of mesh/config.py", () => {
  const off = loadMeshSecurity({ MESH_MTLS: "off" });
  assert.equal(off.enabled, false);
  assert.equal(off.policy, null);
  assert.equal(off.certsDir, DEFAULT_CERTS_DIR);
  for (const word of ["off", "OFF", "false", "No", "0", " off "]) {
    assert.equal(loadMeshSecurity({ MESH_MTLS: word }).enabled, false, word);
  }
  assert.equal(configError({ MESH_MTLS: "maybe" }), "MESH_MTLS must be true or false, got 'maybe'");
  assert.equal(configError({ MESH_MTLS: "enabled" }), "MESH_MTLS must be true or false, got 'enabled'");
});

test("MESH_MTLS=on needs the three files and a shop identity", (t) => {
  const certs = makeCerts(t);
  // Unset, MESH_MTLS is MTLS_DEFAULT (one constant, flipped for every language at once).
  assert.equal(loadMeshSecurity({ MESH_CERTS_DIR: certs.dir }).enabled, MTLS_DEFAULT);
  for (const word of ["on", "TRUE", "yes", "1"]) {
    const security = loadMeshSecurity({ MESH_MTLS: word, MESH_CERTS_DIR: certs.dir });
    assert.equal(security.enabled, true, word);
    assert.equal(security.service, "payments");
    assert.ok(security.policy !== null);
  }
  const named = loadMeshSecurity({
    MESH_MTLS: "on",
    MESH_CERTS_DIR: certs.dir,
    MESH_SERVICE_IDENTITY: "spiffe://shop.local/payments",
  });
  assert.equal(named.service, "payments");

  assert.equal(
    configError({ MESH_MTLS: "on", MESH_CERTS_DIR: certs.dir, MESH_SERVICE_IDENTITY: "billing" }),
    "MESH_SERVICE_IDENTITY must be one of gateway, catalog, orders, inventory, payments, notifications, " +
      "got 'billing'",
  );
  assert.match(
    configError({ MESH_MTLS: "on", MESH_CERTS_DIR: certs.dir, MESH_SERVICE_IDENTITY: "spiffe://other/payments" }),
    /^MESH_SERVICE_IDENTITY must be one of/,
  );

  const empty = tempDir(t);
  mkdirSync(path.join(empty, "sub"));
  const missing = path.join(empty, "ca.pem");
  assert.equal(
    configError({ MESH_MTLS: "on", MESH_CERTS_DIR: empty }),
    `MESH_MTLS is on but ${missing} is missing (MESH_CERTS_DIR=${empty}; \`make certs\` makes it)`,
  );
  writeFileSync(missing, certs.read("ca.pem"));
  assert.equal(
    configError({ MESH_MTLS: "on", MESH_CERTS_DIR: empty }),
    `MESH_MTLS is on but ${path.join(empty, "payments.pem")} is missing (MESH_CERTS_DIR=${empty}; ` +
      "`make certs` makes it)",
  );

  // A bad policy is a configuration error naming the file, line and key.
  const policy = path.join(tempDir(t), "policy.yaml");
  writeFileSync(policy, "version: 2\ntrust_domain: shop.local\nservices: {}\n");
  assert.match(
    configError({ MESH_MTLS: "on", MESH_CERTS_DIR: certs.dir, MESH_POLICY_FILE: policy }),
    new RegExp(`^${policy}:1: version: `),
  );
});

test("an unusable pair at start is a configuration error", LIMIT, async (t) => {
  const certs: Certs = makeCerts(t);
  replaceFile(path.join(certs.dir, "payments.pem"), certs.read("orders.pem"));
  const error = await rejection(startSecure(t, certs));
  assert.ok(error instanceof ConfigError, String(error));
  assert.match(error.message, /^MESH_MTLS is on but the certificate is unusable: .*payments\.key does not belong to/);
});
