// The console's JSON API (served by services/console, see its README): the
// types of the contract and one typed fetch per endpoint. Every failure, a
// network error, a non-2xx answer or a body that is not the expected shape,
// becomes an ApiError whose message names the request, so the caller can put
// it in the status bar as it is.

export type Health = "SERVING" | "NOT_SERVING" | "DOWN" | "UNKNOWN";
export type NodeKind = "service" | "infrastructure" | "client";
export type Transport = "grpc" | "nats";
export type BreakerState = "closed" | "half-open" | "open";
export type SpanStatus = "OK" | "ERROR" | "UNSET";

export interface TopologyNode {
  id: string;
  kind: NodeKind;
  health: Health;
  replicas: number | null;
  replicas_up: number | null;
}

export interface TopologyEdge {
  id: string;
  source: string;
  target: string;
  transport: Transport;
  rate: number | null;
  error_ratio: number | null;
  p50_ms: number | null;
  p99_ms: number | null;
  calls: number | null;
  breaker: BreakerState | null;
}

export interface Topology {
  generated_at: string;
  interval_s: number | null;
  nodes: TopologyNode[];
  edges: TopologyEdge[];
  errors: string[];
}

export interface TraceSummary {
  trace_id: string;
  root_service: string;
  root_name: string;
  start: string;
  duration_ms: number;
  span_count: number;
  services: string[];
  error: boolean;
}

export interface TraceList {
  traces: TraceSummary[];
  jaeger_ui: string | null;
  error: string | null;
}

export type AttributeValue = string | number | boolean | null | AttributeValue[];

export interface SpanEvent {
  name: string;
  time_ms: number;
  attributes: Record<string, AttributeValue>;
}

export interface SpanRow {
  span_id: string;
  parent_id: string | null;
  depth: number;
  service: string;
  name: string;
  kind: string;
  start_ms: number;
  duration_ms: number;
  status: SpanStatus;
  status_message: string;
  attributes: Record<string, AttributeValue>;
  events: SpanEvent[];
}

export interface TraceDetail {
  trace_id: string;
  duration_ms: number;
  rows: SpanRow[];
  error: string | null;
}

export interface Fault {
  service: string;
  method: string;
  delay_ms: number;
  error_ratio: number;
  error_code: string;
}

export interface FaultState {
  faults: Fault[];
  services: string[];
  codes: string[];
}

export interface FaultRequest {
  method: string;
  delay_ms: number;
  error_ratio: number;
  error_code: string;
}

export type TraceStatusFilter = "" | "ok" | "error";

export interface TraceFilters {
  service: string;
  status: TraceStatusFilter;
  limit: number;
}

export class ApiError extends Error {
  override name = "ApiError";
}

// A request that hangs would stall its poller; none of these should take long.
const TIMEOUT_MS = 10_000;

type Check<T> = (body: unknown) => body is T;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// Only the fields the page cannot do without are checked: a body without them
// is a server bug worth naming, anything finer the renderers tolerate.
const isTopology: Check<Topology> = (body): body is Topology =>
  isObject(body) && Array.isArray(body.nodes) && Array.isArray(body.edges);
const isTraceList: Check<TraceList> = (body): body is TraceList => isObject(body) && Array.isArray(body.traces);
const isTraceDetail: Check<TraceDetail> = (body): body is TraceDetail => isObject(body) && Array.isArray(body.rows);
const isFaultState: Check<FaultState> = (body): body is FaultState =>
  isObject(body) && Array.isArray(body.faults) && Array.isArray(body.services) && Array.isArray(body.codes);

function describe(error: unknown): string {
  if (error instanceof Error) {
    return error.name === "AbortError" || error.name === "TimeoutError" ? `no answer in ${TIMEOUT_MS / 1000} s` : error.message;
  }
  return String(error);
}

async function request<T>(method: string, path: string, check: Check<T>, body?: unknown): Promise<T> {
  const what = `${method} ${path}`;
  const init: RequestInit = { method, headers: { Accept: "application/json" }, signal: AbortSignal.timeout(TIMEOUT_MS) };
  if (body !== undefined) {
    init.headers = { Accept: "application/json", "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  let response: Response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(`${what}: ${describe(error)}`);
  }
  let parsed: unknown;
  try {
    parsed = await response.json();
  } catch (error) {
    parsed = undefined;
    if (response.ok) throw new ApiError(`${what}: the answer is not JSON (${describe(error)})`);
  }
  if (!response.ok) {
    const reason = isObject(parsed) && typeof parsed.error === "string" ? parsed.error : response.statusText;
    throw new ApiError(`${what}: ${response.status}${reason ? ` ${reason}` : ""}`);
  }
  if (!check(parsed)) throw new ApiError(`${what}: the answer lacks the fields of the contract`);
  return parsed;
}

export function tracesPath(filters: TraceFilters): string {
  const query = new URLSearchParams();
  if (filters.service) query.set("service", filters.service);
  if (filters.status) query.set("status", filters.status);
  query.set("limit", String(filters.limit));
  return `/api/traces?${query.toString()}`;
}

export const getTopology = (): Promise<Topology> => request("GET", "/api/topology", isTopology);

export const getTraces = (filters: TraceFilters): Promise<TraceList> => request("GET", tracesPath(filters), isTraceList);

export const getTrace = (traceId: string): Promise<TraceDetail> =>
  request("GET", `/api/traces/${encodeURIComponent(traceId)}`, isTraceDetail);

export const getFaults = (): Promise<FaultState> => request("GET", "/api/faults", isFaultState);

export const putFault = (service: string, fault: FaultRequest): Promise<FaultState> =>
  request("PUT", `/api/faults/${encodeURIComponent(service)}`, isFaultState, fault);

export const clearFaults = (service: string): Promise<FaultState> =>
  request("DELETE", `/api/faults/${encodeURIComponent(service)}`, isFaultState);
