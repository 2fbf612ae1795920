// OpenTelemetry tracing for the payments process, configured by OTEL_* variables.
//
// Must run before @grpc/grpc-js is first required: the gRPC instrumentation
// patches grpc-js through a require hook, so a grpc-js loaded earlier is never
// traced. main.ts therefore starts this and only then requires server.ts.
//
// A NodeTracerProvider with exactly what the service needs (rather than
// NodeSDK, which also brings metrics and logs exporters, Zipkin, Prometheus
// and B3/Jaeger propagators): the OTLP gRPC trace exporter behind a batch span
// processor, W3C trace context + baggage, and the gRPC instrumentation only.
// The SDK reads its own variables: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT,
// _INSECURE, _HEADERS, _TIMEOUT (the exporter), OTEL_BSP_* (the batch
// processor), OTEL_TRACES_SAMPLER[_ARG], OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES (the resource; "payments" is only the default).
// OTEL_SDK_DISABLED=true is handled by main.ts, which then never loads this.
// OTEL_TRACES_EXPORTER=none (read by config.ts: this provider ignores it)
// leaves out the exporter and the processor, so spans are still made, sampled
// and propagated but go nowhere, and the cost of making them can be told apart
// from that of exporting them.
//
// Server spans (named `grpc.shop.payments.v1.PaymentsService/Charge`) carry
// rpc.system, rpc.service, rpc.method and rpc.grpc.status_code (an int, the
// code the handler's callback reported); failed calls also get
// grpc.error_name and grpc.error_message, and span status ERROR for any
// non-OK code (this instrumentation's rule, stricter than the Python one).

import { format } from "node:util";

import { context, diag, DiagLogLevel, ROOT_CONTEXT } from "@opentelemetry/api";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { GrpcInstrumentation } from "@opentelemetry/instrumentation-grpc";
import { BatchSpanProcessor, NodeTracerProvider, type SpanExporter } from "@opentelemetry/sdk-trace-node";

import type { TracesExporter } from "./config";
import { log } from "./logging";
import { serviceResource } from "./resource";

// The health and reflection methods, never traced: probes and grpcurl would
// bury the business spans in noise. The instrumentation matches server calls
// by the method name alone (the last path segment: "Check", not
// "/grpc.health.v1.Health/Check"), so these names must never be used by the
// payments service itself; test/telemetry.test.ts checks that they are not.
export const UNTRACED_METHODS: ReadonlySet<string> = new Set(["Check", "Watch", "List", "ServerReflectionInfo"]);

export interface Telemetry {
  /** Exports every finished span now. */
  forceFlush(): Promise<void>;
  /** Flushes and stops the exporter, giving up after `timeoutMs` (a missing collector must not hang exit). */
  shutdown(timeoutMs?: number): Promise<void>;
}

export interface TelemetryOptions {
  /** Where spans go; the OTLP gRPC exporter when omitted. Tests pass an in-memory one. */
  readonly exporter?: SpanExporter;
  /** OTEL_TRACES_EXPORTER as config.ts read it; "otlp" when omitted. Ignored when `exporter` is given. */
  readonly tracesExporter?: TracesExporter;
}

// OpenTelemetry's own problems (a collector that cannot be reached, say) go
// into the service's JSON log instead of bare console lines, outside any
// span: they concern the process, not the request that happened to be active.
// The SDK's error handler passes an exception as a JSON string with its stack:
// one line with its message is enough.
function summarise(message: string, args: unknown[]): string {
  if (message.startsWith("{")) {
    try {
      const parsed: unknown = JSON.parse(message);
      if (typeof parsed === "object" && parsed !== null && "message" in parsed) {
        return String(parsed.message);
      }
    } catch {
      // Not JSON after all: log it as it is.
    }
  }
  return format(message, ...args.map((arg) => (arg instanceof Error ? arg.message : arg)));
}

function routeDiagnostics(): void {
  const warn = (message: string, ...args: unknown[]): void =>
    context.with(ROOT_CONTEXT, () => log.warning(`opentelemetry: ${summarise(message, args)}`));
  const ignore = (): void => undefined;
  diag.setLogger({ error: warn, warn, info: ignore, debug: ignore, verbose: ignore }, DiagLogLevel.WARN);
}

/** Starts tracing for the process and registers it globally; call once, before requiring grpc-js. */
export function startTelemetry(options: TelemetryOptions = {}): Telemetry {
  routeDiagnostics();
  const exporter = options.exporter ?? (options.tracesExporter === "none" ? undefined : new OTLPTraceExporter());
  const provider = new NodeTracerProvider({
    resource: serviceResource(),
    spanProcessors: exporter === undefined ? [] : [new BatchSpanProcessor(exporter)],
  });
  provider.register({
    propagator: new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    }),
  });
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [new GrpcInstrumentation({ ignoreGrpcMethods: [(name) => UNTRACED_METHODS.has(name)] })],
  });
  return {
    forceFlush: () => provider.forceFlush(),
    shutdown: async (timeoutMs = 5000) => {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), timeoutMs);
      });
      const done = provider.shutdown().then(
        () => "done" as const,
        (error: unknown) => {
          log.warning("opentelemetry shutdown failed", { error: String(error) });
          return "done" as const;
        },
      );
      const result = await Promise.race([done, deadline]);
      clearTimeout(timer);
      if (result === "timeout") {
        log.warning(`opentelemetry shutdown gave up after ${timeoutMs} ms; unexported spans are lost`);
      }
    },
  };
}
