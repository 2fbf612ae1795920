// The page's pure functions: edge and node labels, colours, a span's bar on
// the time axis, the fault form's checks, the traces query. Bundled by
// build.mjs into dist/test/ and run with node --test.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { tracesPath, type TopologyEdge } from "../src/api";
import {
  axisTicks,
  barGeometry,
  edgeLabel,
  edgeLook,
  faultSummary,
  formatDuration,
  formatPercent,
  formatRate,
  healthColour,
  jaegerTraceUrl,
  MIN_BAR_PERCENT,
  nodeLabel,
  nodeSetKey,
  parseFaultForm,
  serviceColour,
} from "../src/format";

const EDGE: TopologyEdge = {
  id: "gateway->catalog",
  source: "gateway",
  target: "catalog",
  transport: "grpc",
  rate: 12.5,
  error_ratio: 0,
  p50_ms: 1.2,
  p99_ms: 4.8,
  calls: 1234,
  breaker: "closed",
};

describe("edgeLabel", () => {
  test("reads rate, errors and latency as the contract's example", () => {
    assert.equal(edgeLabel(EDGE), "12.5/s · 0% err · p50 1.2 · p99 4.8 ms");
  });

  test("leads with OPEN or HALF-OPEN while the breaker is not closed", () => {
    assert.equal(edgeLabel({ ...EDGE, breaker: "open", error_ratio: 1 }), "OPEN · 12.5/s · 100% err · p50 1.2 · p99 4.8 ms");
    assert.equal(edgeLabel({ ...EDGE, breaker: "half-open" }), "HALF-OPEN · 12.5/s · 0% err · p50 1.2 · p99 4.8 ms");
    assert.equal(edgeLabel({ ...EDGE, breaker: null }), "12.5/s · 0% err · p50 1.2 · p99 4.8 ms");
  });

  test("shows a dash for each figure not known yet", () => {
    assert.equal(edgeLabel({ ...EDGE, rate: null, error_ratio: null, p50_ms: null, p99_ms: null }), "–/s · – err · p50 – · p99 – ms");
  });

  test("rounds latencies and rates to what can be read", () => {
    assert.equal(edgeLabel({ ...EDGE, rate: 0.333333, error_ratio: 0.0123, p50_ms: 0.456, p99_ms: 250.4 }), "0.33/s · 1.2% err · p50 0.46 · p99 250 ms");
  });
});

describe("figures", () => {
  test("percent keeps small ratios visible", () => {
    assert.equal(formatPercent(0), "0%");
    assert.equal(formatPercent(0.00001), "<0.1%");
    assert.equal(formatPercent(0.004), "0.4%");
    assert.equal(formatPercent(0.05), "5%");
    assert.equal(formatPercent(0.256), "26%");
    assert.equal(formatPercent(1), "100%");
    assert.equal(formatPercent(null), "–");
  });

  test("rates and durations", () => {
    assert.equal(formatRate(0), "0/s");
    assert.equal(formatRate(40), "40/s");
    assert.equal(formatRate(1234.4), "1234/s");
    assert.equal(formatDuration(0.35), "0.35 ms");
    assert.equal(formatDuration(42), "42 ms");
    assert.equal(formatDuration(1250), "1.25 s");
  });
});

describe("nodes", () => {
  test("label: name, health and replicas up of replicas", () => {
    assert.equal(nodeLabel({ id: "catalog", health: "SERVING", replicas: 3, replicas_up: 2 }), "catalog\nSERVING · 2/3");
    assert.equal(nodeLabel({ id: "jaeger", health: "DOWN", replicas: null, replicas_up: null }), "jaeger\nDOWN");
  });

  test("colour by health, unknown values grey", () => {
    assert.equal(healthColour("SERVING"), "#2e9d5b");
    assert.equal(healthColour("DOWN"), "#d0312d");
    assert.equal(healthColour("something new"), healthColour("UNKNOWN"));
  });

  test("the node set's key ignores order and repeats", () => {
    assert.equal(nodeSetKey(["orders", "gateway", "orders"]), nodeSetKey(["gateway", "orders"]));
    assert.notEqual(nodeSetKey(["gateway"]), nodeSetKey(["gateway", "orders"]));
  });
});

describe("edgeLook", () => {
  test("an open breaker is a thick red line, half-open an orange one", () => {
    const open = edgeLook({ ...EDGE, breaker: "open" });
    const half = edgeLook({ ...EDGE, breaker: "half-open" });
    const closed = edgeLook(EDGE);
    assert.equal(open.colour, "#d0312d");
    assert.equal(half.colour, "#f08c00");
    assert.ok(open.width > half.width && half.width > closed.width);
  });

  test("NATS edges are dashed, gRPC ones solid", () => {
    assert.equal(edgeLook({ ...EDGE, transport: "nats" }).dashed, true);
    assert.equal(edgeLook(EDGE).dashed, false);
  });

  test("errors without an open breaker tint the line", () => {
    assert.notEqual(edgeLook({ ...EDGE, error_ratio: 0.2 }).colour, edgeLook(EDGE).colour);
    assert.equal(edgeLook({ ...EDGE, error_ratio: null }).colour, edgeLook(EDGE).colour);
  });
});

describe("barGeometry", () => {
  test("left is start over duration, width the span's share", () => {
    assert.deepEqual(barGeometry(0, 42, 42), { leftPercent: 0, widthPercent: 100 });
    assert.deepEqual(barGeometry(10, 20, 40), { leftPercent: 25, widthPercent: 50 });
    assert.deepEqual(barGeometry(1, 1, 3), { leftPercent: 33.333, widthPercent: 33.333 });
  });

  test("a zero-length span stays visible and inside the axis", () => {
    assert.deepEqual(barGeometry(5, 0, 10), { leftPercent: 50, widthPercent: MIN_BAR_PERCENT });
    const last = barGeometry(10, 0, 10);
    assert.equal(last.widthPercent, MIN_BAR_PERCENT);
    assert.ok(last.leftPercent + last.widthPercent <= 100);
  });

  test("a span past the trace's end is clamped into the axis", () => {
    const bar = barGeometry(30, 50, 40);
    assert.ok(bar.leftPercent >= 0 && bar.leftPercent + bar.widthPercent <= 100);
    assert.deepEqual(barGeometry(-5, 10, 10), { leftPercent: 0, widthPercent: 100 });
  });

  test("a trace of no duration fills the axis", () => {
    assert.deepEqual(barGeometry(0, 0, 0), { leftPercent: 0, widthPercent: 100 });
    assert.deepEqual(barGeometry(0, 1, Number.NaN), { leftPercent: 0, widthPercent: 100 });
  });

  test("axis ticks run from 0 to the trace's duration", () => {
    assert.deepEqual(
      axisTicks(40).map((tick) => [tick.percent, tick.label]),
      [
        [0, "0 ms"],
        [25, "10 ms"],
        [50, "20 ms"],
        [75, "30 ms"],
        [100, "40 ms"],
      ],
    );
  });
});

describe("serviceColour", () => {
  test("the shop's services have fixed, distinct colours", () => {
    const names = ["gateway", "catalog", "orders", "inventory", "payments", "notifications"];
    assert.equal(new Set(names.map(serviceColour)).size, names.length);
    assert.equal(serviceColour("payments"), serviceColour("payments"));
  });

  test("any other name gets the same colour every time", () => {
    assert.match(serviceColour("nats"), /^#[0-9a-f]{6}$/);
    assert.equal(serviceColour("nats"), serviceColour("nats"));
  });
});

describe("parseFaultForm", () => {
  test("a ratio and a code make a fault on every method", () => {
    assert.deepEqual(parseFaultForm({ errorRatio: "1", code: "UNAVAILABLE", delayMs: "0" }), {
      ok: true,
      fault: { method: "*", delay_ms: 0, error_ratio: 1, error_code: "UNAVAILABLE" },
    });
    assert.deepEqual(parseFaultForm({ errorRatio: "", code: "UNAVAILABLE", delayMs: " 300 " }), {
      ok: true,
      fault: { method: "*", delay_ms: 300, error_ratio: 0, error_code: "UNAVAILABLE" },
    });
  });

  test("refuses what the API would refuse", () => {
    for (const input of [
      { errorRatio: "1.5", code: "UNAVAILABLE", delayMs: "0" },
      { errorRatio: "-0.1", code: "UNAVAILABLE", delayMs: "0" },
      { errorRatio: "abc", code: "UNAVAILABLE", delayMs: "0" },
      { errorRatio: "0.5", code: "UNAVAILABLE", delayMs: "-1" },
      { errorRatio: "0.5", code: "UNAVAILABLE", delayMs: "2.5" },
      { errorRatio: "0.5", code: "", delayMs: "0" },
      { errorRatio: "0", code: "UNAVAILABLE", delayMs: "0" },
    ]) {
      const parsed = parseFaultForm(input);
      assert.equal(parsed.ok, false, JSON.stringify(input));
    }
  });

  test("a fault in force reads as ratio and code, delay, method", () => {
    assert.equal(faultSummary({ method: "*", delay_ms: 0, error_ratio: 1, error_code: "UNAVAILABLE" }), "100% UNAVAILABLE");
    assert.equal(faultSummary({ method: "ReserveStock", delay_ms: 300, error_ratio: 0.3, error_code: "INTERNAL" }), "30% INTERNAL + 300 ms delay on ReserveStock");
  });
});

describe("links and queries", () => {
  test("Jaeger's trace page, or none without Jaeger's UI", () => {
    assert.equal(jaegerTraceUrl("http://localhost:16686", "4bf9"), "http://localhost:16686/trace/4bf9");
    assert.equal(jaegerTraceUrl("http://localhost:16686/", "4bf9"), "http://localhost:16686/trace/4bf9");
    assert.equal(jaegerTraceUrl(null, "4bf9"), null);
  });

  test("the traces query names only the filters in use", () => {
    assert.equal(tracesPath({ service: "", status: "", limit: 20 }), "/api/traces?limit=20");
    assert.equal(tracesPath({ service: "payments", status: "error", limit: 20 }), "/api/traces?service=payments&status=error&limit=20");
  });
});
