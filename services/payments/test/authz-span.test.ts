// A refused call marks its server span: the check runs inside the span the
// OpenTelemetry grpc instrumentation starts (guards.ts's AuthorizedServer
// wraps the handler beneath the instrumentation's wrapper), so the span gets
// status ERROR with the reason, mesh.authz.denied=true and mesh.authz.caller,
// and the WARNING line carries the span's trace id. An allowed call's span
// carries no mesh.authz.* attributes.
//
// Telemetry has to start before @grpc/grpc-js is first required (see
// telemetry.test.ts), so everything that loads grpc-js is required below.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-node";

import { configureLogging } from "../src/logging";
import { startTelemetry } from "../src/telemetry";
import type * as AuthzModule from "../src/authz";
import type * as HelpersModule from "../testing/helpers";
import type * as MeshModule from "../testing/mesh";

const exporter = new InMemorySpanExporter();
const telemetry = startTelemetry({ exporter });
after(() => telemetry.shutdown(1000));

const logged: Record<string, unknown>[] = [];
configureLogging("INFO", (line) => logged.push(JSON.parse(line) as Record<string, unknown>));

const grpc = require("@grpc/grpc-js") as typeof import("@grpc/grpc-js");
const { SUBJECT_HEADER } = require("../src/authz") as typeof AuthzModule;
const helpers = require("../testing/helpers") as typeof HelpersModule;
const mesh = require("../testing/mesh") as typeof MeshModule;

const PAYMENTS = "shop.payments.v1.PaymentsService";

async function serverSpan(name: string): Promise<ReadableSpan> {
  await telemetry.forceFlush();
  const spans = exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.SERVER && span.name === name);
  assert.equal(spans.length, 1, `expected one server span ${name}`);
  return spans[0]!;
}

function warningIn(span: ReadableSpan): Record<string, unknown> {
  const lines = logged.filter((line) => line["level"] === "WARNING" && line["span_id"] === span.spanContext().spanId);
  assert.equal(lines.length, 1, JSON.stringify(logged));
  assert.equal(lines[0]!["trace_id"], span.spanContext().traceId);
  return lines[0]!;
}

test("a denial marks the server span and logs inside it", { timeout: 60_000 }, async (t) => {
  const certs = mesh.makeCerts(t);
  const server = await mesh.startSecure(t, certs);
  const orders = mesh.secureClient(t, server.port, mesh.mtls(certs, "orders"));
  exporter.reset();

  // Not allowed by the policy.
  const reason = `caller spiffe://shop.local/orders may not call /${PAYMENTS}/GetPayment`;
  const error = await helpers.rejection(orders.getPayment("pay_1"));
  assert.equal(error.code, grpc.status.PERMISSION_DENIED);
  const getPayment = await serverSpan(`grpc.${PAYMENTS}/GetPayment`);
  assert.deepEqual(getPayment.status, { code: SpanStatusCode.ERROR, message: reason });
  assert.equal(getPayment.attributes["mesh.authz.denied"], true);
  assert.equal(getPayment.attributes["mesh.authz.caller"], "spiffe://shop.local/orders");
  assert.equal(getPayment.attributes["rpc.grpc.status_code"], grpc.status.PERMISSION_DENIED);
  assert.equal(warningIn(getPayment)["message"], `permission denied: ${reason}`);

  // Allowed by the policy, refused for the header.
  const subject = new grpc.Metadata();
  subject.set(SUBJECT_HEADER, "customer-1");
  await helpers.rejection(orders.charge(helpers.chargeRequest({ idempotencyKey: "with-subject" }), subject));
  const refused = await serverSpan(`grpc.${PAYMENTS}/Charge`);
  assert.equal(refused.status.code, SpanStatusCode.ERROR);
  assert.match(refused.status.message ?? "", /may not send x-shop-subject/);
  assert.equal(refused.attributes["mesh.authz.denied"], true);
  assert.equal(refused.attributes["mesh.authz.caller"], "spiffe://shop.local/orders");
  warningIn(refused);

  // Allowed: no mark.
  exporter.reset();
  await orders.charge(helpers.chargeRequest({ idempotencyKey: "allowed" }));
  const allowed = await serverSpan(`grpc.${PAYMENTS}/Charge`);
  assert.notEqual(allowed.status.code, SpanStatusCode.ERROR);
  assert.equal(allowed.attributes["mesh.authz.denied"], undefined);
});
