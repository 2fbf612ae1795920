// OTEL_TRACES_EXPORTER=none: no exporter and no span processor, yet spans are
// still made and sampled, and their context reaches the next hop and the log
// lines. That nothing leaves the process is checked on the real entry point
// (process.test.ts), with a collector that counts its connections.
//
// As in telemetry.test.ts, telemetry starts before anything requires
// @grpc/grpc-js; node --test runs this file in its own process.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { context, propagation, trace, TraceFlags } from "@opentelemetry/api";

import { configureLogging } from "../src/logging";
import { startTelemetry } from "../src/telemetry";
import type * as ServerModule from "../src/server";
import type * as HelpersModule from "../testing/helpers";

// The developer's shell may name a sampler that drops spans.
delete process.env["OTEL_TRACES_SAMPLER"];
const telemetry = startTelemetry({ tracesExporter: "none" });
after(() => telemetry.shutdown(1000));

const grpc = require("@grpc/grpc-js") as typeof import("@grpc/grpc-js");
const { build } = require("../src/server") as typeof ServerModule;
const helpers = require("../testing/helpers") as typeof HelpersModule;

const tracer = trace.getTracer("telemetry-none.test");

test("spans are recorded and sampled, and traceparent says so", () => {
  const span = tracer.startSpan("kept");
  assert.equal(span.isRecording(), true);
  assert.equal(span.spanContext().traceFlags & TraceFlags.SAMPLED, TraceFlags.SAMPLED);
  const headers: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), span), headers);
  const { traceId, spanId } = span.spanContext();
  assert.equal(headers["traceparent"], `00-${traceId}-${spanId}-01`);
  span.end();
});

test("a call continues the caller's trace: the server's log line carries its trace_id", async (t) => {
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
  const caller = tracer.startSpan("caller");
  const error = await context.with(trace.setSpan(context.active(), caller), () =>
    helpers.rejection(client.getPayment("pay_1")),
  );
  caller.end();
  assert.equal(error.code, grpc.status.INTERNAL);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.["trace_id"], caller.spanContext().traceId);
  assert.match(lines[0]?.["span_id"] ?? "", /^[0-9a-f]{16}$/);
  assert.notEqual(lines[0]?.["span_id"], caller.spanContext().spanId);
});
