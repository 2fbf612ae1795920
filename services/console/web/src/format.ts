// Pure functions that turn the API's figures into what the page shows: labels,
// colours, a span's bar on the time axis, a fault form's values. No DOM here,
// so test/format.test.ts runs them under node --test.

import type { BreakerState, FaultRequest, Health, TopologyEdge, TopologyNode } from "./api";

const DASH = "–";

// 12.5 -> "12.5", 0.04 -> "0.04", 1234.5 -> "1235".
export function formatNumber(value: number): string {
  const size = Math.abs(value);
  if (size === 0) return "0";
  if (size < 1) return trimZeros(value.toFixed(2));
  if (size < 100) return trimZeros(value.toFixed(1));
  return value.toFixed(0);
}

function trimZeros(text: string): string {
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

export function formatRate(rate: number | null): string {
  return rate === null ? `${DASH}/s` : `${formatNumber(rate)}/s`;
}

// 0 -> "0%", 0.004 -> "0.4%", 0.25 -> "25%", 1 -> "100%"; below 10 % one
// decimal and never "0%" for a ratio above 0, so the first failures show.
export function formatPercent(ratio: number | null): string {
  if (ratio === null) return DASH;
  const percent = ratio * 100;
  if (percent === 0 || percent >= 10) return `${Math.round(percent)}%`;
  if (percent < 0.1) return "<0.1%";
  return `${trimZeros(percent.toFixed(1))}%`;
}

export function formatMs(ms: number | null): string {
  return ms === null ? DASH : formatNumber(ms);
}

// A span's or a trace's duration: "0.35 ms", "42 ms", "1.25 s".
export function formatDuration(ms: number): string {
  if (ms >= 1000) return `${trimZeros((ms / 1000).toFixed(2))} s`;
  return `${formatNumber(ms)} ms`;
}

const BREAKER_MARK: Record<BreakerState, string> = { open: "OPEN", "half-open": "HALF-OPEN", closed: "" };

// "12.5/s · 0% err · p50 1.2 · p99 4.8 ms", led by "OPEN · " or
// "HALF-OPEN · " while the edge's breaker is not closed.
export function edgeLabel(edge: Pick<TopologyEdge, "rate" | "error_ratio" | "p50_ms" | "p99_ms" | "breaker">): string {
  const figures = `${formatRate(edge.rate)} · ${formatPercent(edge.error_ratio)} err · p50 ${formatMs(edge.p50_ms)} · p99 ${formatMs(edge.p99_ms)} ms`;
  const mark = edge.breaker === null ? "" : BREAKER_MARK[edge.breaker] ?? "";
  return mark ? `${mark} · ${figures}` : figures;
}

// "payments\nSERVING · 1/1"; the replica count only where it is known.
export function nodeLabel(node: Pick<TopologyNode, "id" | "health" | "replicas" | "replicas_up">): string {
  const replicas = node.replicas === null ? "" : ` · ${node.replicas_up ?? DASH}/${node.replicas}`;
  return `${node.id}\n${node.health}${replicas}`;
}

export const HEALTH_COLOURS: Record<Health, string> = {
  SERVING: "#2e9d5b",
  NOT_SERVING: "#e08a1e",
  DOWN: "#d0312d",
  UNKNOWN: "#8d96a5",
};

export function healthColour(health: string): string {
  return HEALTH_COLOURS[health as Health] ?? HEALTH_COLOURS.UNKNOWN;
}

export interface EdgeLook {
  colour: string;
  width: number;
  dashed: boolean;
}

// A breaker that is not closed outweighs everything else: open is a thick red
// line, half-open an orange one; otherwise errors tint the line.
export function edgeLook(edge: Pick<TopologyEdge, "transport" | "error_ratio" | "breaker">): EdgeLook {
  const dashed = edge.transport === "nats";
  if (edge.breaker === "open") return { colour: "#d0312d", width: 7, dashed };
  if (edge.breaker === "half-open") return { colour: "#f08c00", width: 5, dashed };
  if (edge.error_ratio !== null && edge.error_ratio > 0) return { colour: "#e07a7a", width: 3, dashed };
  return { colour: "#97a3b6", width: 2, dashed };
}

// One colour per service, the same on every page load: the shop's services
// have theirs, any other name takes one of the rest by a hash of its name.
const SERVICE_COLOURS: Record<string, string> = {
  gateway: "#4e79a7",
  catalog: "#59a14f",
  orders: "#f28e2b",
  inventory: "#b07aa1",
  payments: "#edc948",
  notifications: "#76b7b2",
};
const SPARE_COLOURS = ["#9c755f", "#ff9da7", "#bab0ac", "#86bcb6", "#d4a6c8", "#8cd17d", "#a0cbe8", "#ffbe7d"];

export function serviceColour(service: string): string {
  const fixed = SERVICE_COLOURS[service];
  if (fixed !== undefined) return fixed;
  let hash = 0;
  for (const char of service) hash = (hash * 31 + (char.codePointAt(0) ?? 0)) >>> 0;
  return SPARE_COLOURS[hash % SPARE_COLOURS.length] ?? "#bab0ac";
}

export interface Bar {
  leftPercent: number;
  widthPercent: number;
}

// Narrower than this a span would vanish; it stays a visible sliver.
export const MIN_BAR_PERCENT = 0.3;

// A span's bar on the trace's time axis, in percent of its width: left is
// start/duration, width is the span's duration, both clamped into the axis.
export function barGeometry(startMs: number, durationMs: number, traceMs: number): Bar {
  if (!(traceMs > 0)) return { leftPercent: 0, widthPercent: 100 };
  const left = clamp((startMs / traceMs) * 100, 0, 100);
  const width = clamp((durationMs / traceMs) * 100, 0, 100 - left);
  const shown = Math.max(width, MIN_BAR_PERCENT);
  return { leftPercent: round(Math.min(left, 100 - shown)), widthPercent: round(shown) };
}

function clamp(value: number, low: number, high: number): number {
  return Number.isFinite(value) ? Math.min(Math.max(value, low), high) : low;
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

// Tick marks for the waterfall's axis: n + 1 evenly spaced times from 0.
export function axisTicks(traceMs: number, count = 4): { percent: number; label: string }[] {
  const ticks: { percent: number; label: string }[] = [];
  for (let i = 0; i <= count; i += 1) {
    ticks.push({ percent: (i / count) * 100, label: formatDuration(Math.max(traceMs, 0) * (i / count)) });
  }
  return ticks;
}

export function jaegerTraceUrl(jaegerUi: string | null, traceId: string): string | null {
  if (!jaegerUi) return null;
  return `${jaegerUi.replace(/\/+$/, "")}/trace/${encodeURIComponent(traceId)}`;
}

// A node set's identity: the graph is laid out again only when it changes.
export function nodeSetKey(ids: readonly string[]): string {
  return [...new Set(ids)].sort().join("\n");
}

export interface FaultInput {
  errorRatio: string;
  code: string;
  delayMs: string;
}

export type FaultParse = { ok: true; fault: FaultRequest } | { ok: false; error: string };

// The fault form's three fields as typed, checked the way the API checks
// them; an empty field counts as 0. Faults apply to every method ("*").
export function parseFaultForm(input: FaultInput): FaultParse {
  const ratioText = input.errorRatio.trim();
  const delayText = input.delayMs.trim();
  const ratio = ratioText === "" ? 0 : Number(ratioText);
  const delay = delayText === "" ? 0 : Number(delayText);
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) return { ok: false, error: "error ratio must be between 0 and 1" };
  if (!Number.isInteger(delay) || delay < 0) return { ok: false, error: "delay must be a whole number of ms, 0 or more" };
  if (ratio > 0 && input.code === "") return { ok: false, error: "choose a status code for the errors" };
  if (ratio === 0 && delay === 0) return { ok: false, error: "nothing to inject: set an error ratio or a delay" };
  return { ok: true, fault: { method: "*", delay_ms: delay, error_ratio: ratio, error_code: input.code } };
}

// "100% UNAVAILABLE" / "300 ms delay" / both, with the method unless it is all.
export function faultSummary(fault: { method: string; delay_ms: number; error_ratio: number; error_code: string }): string {
  const parts: string[] = [];
  if (fault.error_ratio > 0) parts.push(`${formatPercent(fault.error_ratio)} ${fault.error_code}`);
  if (fault.delay_ms > 0) parts.push(`${formatNumber(fault.delay_ms)} ms delay`);
  if (parts.length === 0) parts.push("no effect");
  return fault.method && fault.method !== "*" ? `${parts.join(" + ")} on ${fault.method}` : parts.join(" + ");
}

// "13:00:00" in the browser's time zone, or the text as given if unparsable.
export function clockTime(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// The value of a data-* attribute for a figure that may be unknown.
export function dataNumber(value: number | null | undefined): string {
  return typeof value === "number" && Number.isFinite(value) ? String(value) : "";
}
