// JSON logs on stderr, one object per line, in the shape the Python services
// write (tracing/logs.py), so one collector query covers the whole mesh:
//
//   {"time":"2026-01-01T12:00:00.123Z","level":"INFO","message":"serving on port 50054",
//    "service":"payments","trace_id":"4bf92f35...","span_id":"00f067aa..."}
//
// trace_id and span_id are those of the active OpenTelemetry span, lowercase
// hex as in a W3C traceparent, and absent outside any span. An error's stack
// goes into one "exception" field (JSON escapes its newlines), so it never
// splits into lines a collector would read as separate entries.
// Only @opentelemetry/api is used: it is a no-op when tracing is off.

import { isSpanContextValid, trace } from "@opentelemetry/api";

import type { LogLevel } from "./config";

export const SERVICE_NAME = "payments";

const SEVERITY: Readonly<Record<LogLevel, number>> = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };

export type Fields = Readonly<Record<string, unknown>>;

export interface Logger {
  debug(message: string, fields?: Fields): void;
  info(message: string, fields?: Fields): void;
  warning(message: string, fields?: Fields): void;
  /** `error`, when given, is logged with its stack in the "exception" field. */
  error(message: string, error?: unknown, fields?: Fields): void;
}

/** Where lines go; tests swap it to capture them. */
export type Sink = (line: string) => void;

const stderrSink: Sink = (line) => {
  process.stderr.write(line);
};

let threshold = SEVERITY.INFO;
let sink: Sink = stderrSink;

/** Sets the lowest level written (LOG_LEVEL) and, for tests, where lines go. */
export function configureLogging(level: LogLevel, to: Sink = stderrSink): void {
  threshold = SEVERITY[level];
  sink = to;
}

// BigInt (money) has no JSON form of its own: write it as a decimal string.
function replacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    return error.stack ?? `${error.name}: ${error.message}`;
  }
  return String(error);
}

function write(level: LogLevel, message: string, fields?: Fields, error?: unknown): void {
  if (SEVERITY[level] < threshold) {
    return;
  }
  const record: Record<string, unknown> = { time: new Date().toISOString(), level, message, service: SERVICE_NAME };
  const context = trace.getActiveSpan()?.spanContext();
  if (context !== undefined && isSpanContextValid(context)) {
    record["trace_id"] = context.traceId;
    record["span_id"] = context.spanId;
  }
  if (fields !== undefined) {
    for (const [key, value] of Object.entries(fields)) {
      if (!(key in record)) {
        record[key] = value;
      }
    }
  }
  if (error !== undefined) {
    record["exception"] = describe(error);
  }
  sink(`${JSON.stringify(record, replacer)}\n`);
}

export const log: Logger = {
  debug: (message, fields) => write("DEBUG", message, fields),
  info: (message, fields) => write("INFO", message, fields),
  warning: (message, fields) => write("WARNING", message, fields),
  error: (message, error, fields) => write("ERROR", message, fields, error),
};
