// AuthorizedServer guards every RPC shape: a test service with a unary, a
// client-streaming, a server-streaming and a bidi method, served over mTLS
// with a policy that lets orders call it and nobody else. The gateway is
// refused on each shape with PERMISSION_DENIED before the handler runs;
// orders reaches each. Health stays open.

import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";

import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";

import { Authorization } from "../src/authz";
import { configureLogging } from "../src/logging";
import { parsePolicy } from "../src/policy-file";
import { AuthorizedServer } from "../src/guards";
import { jsonMethod, rejection } from "../testing/helpers";
import { type Certs, makeCerts, mtls, secureClient } from "../testing/mesh";

const LIMIT = { timeout: 60_000 };
const SERVICE = "shop.payments.v1.ShapesService";

configureLogging("ERROR", () => undefined);

const method = (name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<unknown, unknown> =>
  jsonMethod(SERVICE, name, requestStream, responseStream);

const SHAPES = {
  unary: method("Unary", false, false),
  clientStream: method("ClientStream", true, false),
  serverStream: method("ServerStream", false, true),
  bidi: method("Bidi", true, true),
};

const POLICY = parsePolicy(
  ["version: 1", "trust_domain: shop.local", "services:", "  payments:", "    - callers: [orders]", `      methods: ["${SERVICE}/*"]`, ""].join("\n"),
);

async function start(t: TestContext, certs: Certs, reached: string[]): Promise<number> {
  const server = new AuthorizedServer(new Authorization(POLICY, "payments"));
  const implementation: grpc.UntypedServiceImplementation = {
    unary: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      reached.push("unary");
      callback(null, { ok: true });
    },
    clientStream: (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      reached.push("clientStream");
      call.on("data", () => undefined);
      call.on("end", () => callback(null, { ok: true }));
    },
    serverStream: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      reached.push("serverStream");
      call.write({ ok: true });
      call.end();
    },
    bidi: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
      reached.push("bidi");
      call.on("data", (message: unknown) => call.write(message));
      call.on("end", () => call.end());
    },
  };
  server.addService(SHAPES, implementation);
  new HealthImplementation({ "": "SERVING" }).addToServer(server);
  const credentials = grpc.ServerCredentials.createSsl(
    certs.read("ca.pem"),
    [{ private_key: certs.read("payments.key"), cert_chain: certs.read("payments.pem") }],
    true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) => (error === null ? resolve(bound) : reject(error))),
  );
  t.after(() => server.forceShutdown());
  return port;
}

type ShapesClient = grpc.Client & Record<keyof typeof SHAPES, (...args: unknown[]) => unknown>;

/** Calls each shape once; resolves with what came back, rejects with the status. */
function callEach(client: ShapesClient): Record<keyof typeof SHAPES, Promise<unknown>> {
  const unary = new Promise((resolve, reject) =>
    client.unary({ n: 1 }, (error: grpc.ServiceError | null, value: unknown) => (error ? reject(error) : resolve(value))),
  );
  const clientStream = new Promise((resolve, reject) => {
    const call = client.clientStream((error: grpc.ServiceError | null, value: unknown) =>
      error ? reject(error) : resolve(value),
    ) as grpc.ClientWritableStream<unknown>;
    call.write({ n: 1 });
    call.end();
  });
  const collect = (call: grpc.ClientReadableStream<unknown>): Promise<unknown[]> =>
    new Promise((resolve, reject) => {
      const received: unknown[] = [];
      call.on("data", (message: unknown) => received.push(message));
      call.on("error", reject);
      call.on("end", () => resolve(received));
    });
  const serverStream = collect(client.serverStream({ n: 1 }) as grpc.ClientReadableStream<unknown>);
  const duplex = client.bidi() as grpc.ClientDuplexStream<unknown, unknown>;
  const bidi = collect(duplex);
  duplex.write({ n: 1 });
  duplex.end();
  return { unary, clientStream, serverStream, bidi };
}

test("every RPC shape is checked before its handler runs", LIMIT, async (t) => {
  const certs = makeCerts(t);
  const reached: string[] = [];
  const port = await start(t, certs, reached);
  const Client = grpc.makeGenericClientConstructor(SHAPES, "ShapesService");
  const options = { "grpc.ssl_target_name_override": "localhost" };

  const gateway = new Client(`127.0.0.1:${port}`, mtls(certs, "gateway"), options) as unknown as ShapesClient;
  t.after(() => gateway.close());
  // Each rejection is handled at once: the calls run together.
  const refused = Object.entries(callEach(gateway)).map(([shape, call]) => [shape, rejection(call)] as const);
  for (const [shape, failed] of refused) {
    const error = await failed;
    assert.equal(error.code, grpc.status.PERMISSION_DENIED, `${shape}: ${error.message}`);
    const name = SHAPES[shape as keyof typeof SHAPES].path;
    assert.equal(error.details, `caller spiffe://shop.local/gateway may not call ${name}`);
  }
  assert.deepEqual(reached, []);

  const orders = new Client(`127.0.0.1:${port}`, mtls(certs, "orders"), options) as unknown as ShapesClient;
  t.after(() => orders.close());
  const allowed = callEach(orders);
  assert.deepEqual(await allowed.unary, { ok: true });
  assert.deepEqual(await allowed.clientStream, { ok: true });
  assert.deepEqual(await allowed.serverStream, [{ ok: true }]);
  assert.deepEqual(await allowed.bidi, [{ n: 1 }]);
  assert.deepEqual([...reached].sort(), ["bidi", "clientStream", "serverStream", "unary"]);

  // Health is registered on the same server and open to any valid certificate.
  assert.equal(await secureClient(t, port, mtls(certs, "gateway")).health(), "SERVING");
});
