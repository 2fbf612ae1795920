// Tracing of the real server through OpenTelemetry's grpc-js instrumentation,
// with an in-memory exporter: span names and attributes, the status code
// attribute, W3C propagation from a traced client, untraced health checks,
// and trace ids in log lines.
//
// Telemetry has to start before @grpc/grpc-js is first required (its require
// hook patches grpc-js), so everything that loads grpc-js is required below,
// after startTelemetry, not imported at the top. node --test runs each file
// in its own process, so the other test files are not affected.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-node";

import { configureLogging } from "../src/logging";
import { startTelemetry, UNTRACED_METHODS } from "../src/telemetry";
import type * as PaymentsModule from "../../../gen/ts/shop/payments/v1/payments";
import type * as ServerModule from "../src/server";
import type * as HelpersModule from "../testing/helpers";

const exporter = new InMemorySpanExporter();
const telemetry = startTelemetry({ exporter });
after(() => telemetry.shutdown(1000));

const grpc = require("@grpc/grpc-js") as typeof import("@grpc/grpc-js");
const { PaymentsServiceService } = require("../../../gen/ts/shop/payments/v1/payments") as typeof PaymentsModule;
const { build } = require("../src/server") as typeof ServerModule;
const helpers = require("../testing/helpers") as typeof HelpersModule;
const { service: healthService } = require("grpc-health-check") as typeof import("grpc-health-check");

const STATUS_CODE = "rpc.grpc.status_code";

async function serverSpans(): Promise<ReadableSpan[]> {
  await telemetry.forceFlush();
  return exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.SERVER);
}

function only(spans: ReadableSpan[], name: string): ReadableSpan {
  const matching = spans.filter((span) => span.name === name);
  assert.equal(matching.length, 1, `expected one span ${name}, got ${spans.map((s) => s.name).join(", ")}`);
  return matching[0]!;
}

test("server spans carry rpc.* attributes and rpc.grpc.status_code as an int", async (t) => {
  exporter.reset();
  const payments = await build(helpers.testConfig(helpers.tempDir(t)));
  const client = helpers.connect(payments.port);
  t.after(() => {
    client.close();
    payments.server.forceShutdown();
    payments.store.close();
  });

  await client.charge(helpers.chargeRequest({ idempotencyKey: "traced-ok" }));
  await helpers.rejection(client.getPayment("pay_missing"));
  await helpers.rejection(client.charge(helpers.chargeRequest({ idempotencyKey: "" })));
  await client.resolveCharge("traced-ok");
  await helpers.rejection(client.resolveCharge(""));

  const spans = await serverSpans();
  const getPayment = only(spans, "grpc.shop.payments.v1.PaymentsService/GetPayment");
  assert.equal(getPayment.attributes[STATUS_CODE], grpc.status.NOT_FOUND);
  assert.equal(getPayment.attributes["rpc.system"], "grpc");
  assert.equal(getPayment.attributes["rpc.service"], "shop.payments.v1.PaymentsService");
  assert.equal(getPayment.attributes["rpc.method"], "GetPayment");
  assert.equal(getPayment.status.code, SpanStatusCode.ERROR);

  const charges = spans.filter((span) => span.name === "grpc.shop.payments.v1.PaymentsService/Charge");
  const codes = charges.map((span) => span.attributes[STATUS_CODE]).sort();
  assert.deepEqual(codes, [grpc.status.OK, grpc.status.INVALID_ARGUMENT]);
  assert.ok(charges.every((span) => typeof span.attributes[STATUS_CODE] === "number"));

  const resolves = spans.filter((span) => span.name === "grpc.shop.payments.v1.PaymentsService/ResolveCharge");
  const resolveCodes = resolves.map((span) => span.attributes[STATUS_CODE]).sort();
  assert.deepEqual(resolveCodes, [grpc.status.OK, grpc.status.INVALID_ARGUMENT]);
  assert.ok(resolves.every((span) => span.attributes["rpc.method"] === "ResolveCharge"));

  const expectedName = process.env["OTEL_SERVICE_NAME"] || "payments";
  assert.equal(getPayment.resource.attributes["service.name"], expectedName);
});

test("a traced client's context continues into the server span (W3C traceparent)", async (t) => {
  exporter.reset();
  const payments = await build(helpers.testConfig(helpers.tempDir(t)));
  const client = helpers.connect(payments.port);
  t.after(() => {
    client.close();
    payments.server.forceShutdown();
    payments.store.close();
  });
  await helpers.rejection(client.getPayment("pay_parent"));
  await telemetry.forceFlush();
  const all = exporter.getFinishedSpans();
  const server = only(all.filter((span) => span.kind === SpanKind.SERVER), "grpc.shop.payments.v1.PaymentsService/GetPayment");
  const clientSpan = only(all.filter((span) => span.kind === SpanKind.CLIENT), "grpc.shop.payments.v1.PaymentsService/GetPayment");
  assert.equal(server.spanContext().traceId, clientSpan.spanContext().traceId);
  assert.equal(server.parentSpanContext?.spanId, clientSpan.spanContext().spanId);
});

test("health checks are not traced", async (t) => {
  exporter.reset();
  const payments = await build(helpers.testConfig(helpers.tempDir(t)));
  const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  const health = new Health(`127.0.0.1:${payments.port}`, grpc.credentials.createInsecure()) as unknown as {
    check(request: { service: string }, callback: (error: unknown, response: { status: string }) => void): void;
    close(): void;
  };
  t.after(() => {
    health.close();
    payments.server.forceShutdown();
    payments.store.close();
  });
  const status = await new Promise<string>((resolve, reject) =>
    health.check({ service: "" }, (error, response) => (error ? reject(error) : resolve(response.status))),
  );
  assert.equal(status, "SERVING");
  await telemetry.forceFlush();
  const traced = exporter.getFinishedSpans().filter((span) => span.name.includes("grpc.health"));
  assert.deepEqual(traced.map((span) => span.name), []);
});

test("the untraced method names are not the payments service's own", () => {
  const own = Object.values(PaymentsServiceService).map((method) => method.path.split("/").pop());
  assert.deepEqual(own.sort(), ["Charge", "GetPayment", "Refund", "ResolveCharge"]);
  for (const name of own) {
    assert.equal(UNTRACED_METHODS.has(name ?? ""), false, name);
  }
});

test("log lines written inside a call carry its trace_id and span_id", async (t) => {
  exporter.reset();
  const lines: Record<string, string>[] = [];
  configureLogging("ERROR", (line) => lines.push(JSON.parse(line) as Record<string, string>));
  t.after(() => configureLogging("ERROR"));
  const payments = await build(helpers.testConfig(helpers.tempDir(t)), {
    api: {
      charge: () => Promise.reject(new Error("unused")),
      refund: () => Promise.reject(new Error("unused")),
      resolveCharge: () => Promise.reject(new Error("unused")),
      getPayment: () => {
        throw new Error("boom");
      },
    },
  });
  const client = helpers.connect(payments.port);
  t.after(() => {
    client.close();
    payments.server.forceShutdown();
    payments.store.close();
  });
  const error = await helpers.rejection(client.getPayment("pay_1"));
  assert.equal(error.code, grpc.status.INTERNAL);
  const span = only(await serverSpans(), "grpc.shop.payments.v1.PaymentsService/GetPayment");
  assert.equal(span.attributes[STATUS_CODE], grpc.status.INTERNAL);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.["trace_id"], span.spanContext().traceId);
  assert.equal(lines[0]?.["span_id"], span.spanContext().spanId);
  assert.match(lines[0]?.["trace_id"] ?? "", /^[0-9a-f]{32}$/);
});
