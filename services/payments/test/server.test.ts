// What build() and shutDown() add around the service: health, server
// reflection that protobuf-go clients accept, fault injection that spares
// health, and a graceful stop that lets a call in flight finish.

import assert from "node:assert/strict";
import * as path from "node:path";
import { test } from "node:test";

import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";

import { configureLogging } from "../src/logging";
import { build, type PaymentsServer, SERVICE_FULL_NAME, shutDown } from "../src/server";
import { chargeRequest, connect, rejection, tempDir, testConfig } from "../testing/helpers";

type Callback<T> = (error: grpc.ServiceError | null, response: T) => void;

interface HealthClient extends grpc.Client {
  check(request: { service: string }, callback: Callback<{ status: string }>): void;
}

function healthClient(port: number): HealthClient {
  const Client = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as HealthClient;
}

function check(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.check({ service }, (error, response) => (error === null ? resolve(response.status) : reject(error))),
  );
}

// A test that goes wrong must fail, not hang.
const LIMIT = { timeout: 30_000 };

function stop(payments: PaymentsServer): void {
  payments.server.forceShutdown();
  payments.store.close();
}

test("health reports SERVING for the server and the payments service once bound", LIMIT, async (t) => {
  const payments = await build(testConfig(tempDir(t)));
  const client = healthClient(payments.port);
  t.after(() => {
    client.close();
    stop(payments);
  });
  assert.equal(await check(client, ""), "SERVING");
  assert.equal(await check(client, SERVICE_FULL_NAME), "SERVING");
  const unknown = await rejection(check(client, "no.such.Service"));
  assert.equal(unknown.code, grpc.status.NOT_FOUND);
});

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_message: string };
}

/** One request on the v1 reflection stream, as grpcurl sends it. */
async function reflect(port: number, request: Record<string, string>): Promise<ReflectionResponse> {
  const protos = path.join(path.dirname(require.resolve("@grpc/reflection/package.json")), "build", "proto");
  const definition = loadSync("grpc/reflection/v1/reflection.proto", { includeDirs: [protos], keepCase: true });
  const Client = grpc.makeClientConstructor(
    definition["grpc.reflection.v1.ServerReflection"] as grpc.ServiceDefinition,
    "ServerReflection",
  );
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as {
    ServerReflectionInfo(): grpc.ClientDuplexStream<Record<string, string>, ReflectionResponse>;
    close(): void;
  };
  try {
    return await new Promise((resolve, reject) => {
      const stream = client.ServerReflectionInfo();
      stream.on("data", (response: ReflectionResponse) => {
        resolve(response);
        stream.end();
      });
      stream.on("error", reject);
      stream.write(request);
    });
  } finally {
    client.close();
  }
}

test("reflection lists the service, health and reflection, with descriptors protobuf-go accepts", LIMIT, async (t) => {
  const payments = await build(testConfig(tempDir(t)));
  t.after(() => stop(payments));

  const listed = await reflect(payments.port, { list_services: "" });
  const names = listed.list_services_response?.service.map((s) => s.name) ?? [];
  for (const name of [SERVICE_FULL_NAME, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]) {
    assert.ok(names.includes(name), `${name} missing from ${names.join(", ")}`);
  }

  for (const symbol of [SERVICE_FULL_NAME, "grpc.health.v1.Health", "google.rpc.BadRequest"]) {
    const found = await reflect(payments.port, { file_containing_symbol: symbol });
    const files = (found.file_descriptor_response?.file_descriptor_proto ?? []).map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes),
    );
    assert.ok(files.length > 0, `no file for ${symbol}`);
    // createFileRegistry resolves every dependency and type reference, as
    // protobuf-go does for grpcurl: it throws on what grpcurl would reject.
    const [first] = files;
    assert.ok(first);
    const registry = createFileRegistry(first, (name) => files.find((file) => file.name === name));
    if (symbol === SERVICE_FULL_NAME) {
      const service = registry.getService(SERVICE_FULL_NAME);
      assert.deepEqual(service?.methods.map((m) => m.name).sort(), ["Charge", "GetPayment", "Refund", "ResolveCharge"]);
      const payment = registry.getMessage("shop.payments.v1.Payment");
      assert.equal(payment?.field["amount"]?.message?.typeName, "shop.common.v1.Money");
      assert.equal(payment?.field["createTime"]?.message?.typeName, "google.protobuf.Timestamp");
      assert.ok(payment?.fields.some((f) => f.name === "card_last4"), "field names are not the contract's");
    }
    if (symbol === "grpc.health.v1.Health") {
      const list = registry.getMessage("grpc.health.v1.HealthListResponse");
      assert.equal(list?.field["statuses"]?.fieldKind, "map");
    }
  }
});

test("injected faults fail the service's calls but never health", LIMIT, async (t) => {
  const faults = { delayMs: 1, errorPercent: 100 };
  const payments = await build(testConfig(tempDir(t), { faults }));
  const client = connect(payments.port);
  const health = healthClient(payments.port);
  t.after(() => {
    client.close();
    health.close();
    stop(payments);
  });
  const error = await rejection(client.getPayment("pay_1"));
  assert.equal(error.code, grpc.status.UNAVAILABLE);
  assert.equal(error.details, "injected fault in /shop.payments.v1.PaymentsService/GetPayment");
  assert.equal(await check(health, ""), "SERVING");
});

test("an error share below the draw lets the call through", LIMIT, async (t) => {
  const payments = await build(testConfig(tempDir(t), { faults: { delayMs: 0, errorPercent: 50 } }), {
    random: () => 0.5,
  });
  const client = connect(payments.port);
  t.after(() => {
    client.close();
    stop(payments);
  });
  const error = await rejection(client.getPayment("pay_1"));
  assert.equal(error.code, grpc.status.NOT_FOUND);
});

test("shutDown turns health NOT_SERVING and lets a call in flight finish OK", LIMIT, async (t) => {
  // The injected delay holds the call on the server; the DEBUG "call started"
  // line says when it has arrived, so no timing is assumed.
  let arrived: () => void = () => undefined;
  const started = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  configureLogging("DEBUG", (line) => {
    if ((JSON.parse(line) as { message: string }).message === "call started") {
      arrived();
    }
  });
  t.after(() => configureLogging("ERROR"));
  const payments = await build(
    testConfig(tempDir(t), { faults: { delayMs: 1500, errorPercent: 0 }, drainSeconds: 0, graceSeconds: 30 }),
  );
  const client = connect(payments.port);
  t.after(() => client.close());

  const inFlight = client.charge(chargeRequest({ idempotencyKey: "in-flight" }));
  await started;
  const stopping = shutDown(payments, testConfig("", { drainSeconds: 0, graceSeconds: 30 }).server);
  const response = await inFlight;
  assert.ok(response.payment?.id.startsWith("pay_"));
  await stopping;
  // New calls are refused once the server has stopped.
  const late = connect(payments.port);
  t.after(() => late.close());
  const refused = await rejection(late.getPayment("pay_x"));
  assert.equal(refused.code, grpc.status.UNAVAILABLE);
});

test("shutDown reports NOT_SERVING while draining", LIMIT, async (t) => {
  const payments = await build(testConfig(tempDir(t)));
  const health = healthClient(payments.port);
  t.after(() => health.close());
  assert.equal(await check(health, SERVICE_FULL_NAME), "SERVING");
  const stopping = shutDown(payments, testConfig("", { drainSeconds: 2, graceSeconds: 5 }).server);
  assert.equal(await check(health, SERVICE_FULL_NAME), "NOT_SERVING");
  assert.equal(await check(health, ""), "NOT_SERVING");
  await stopping;
});
