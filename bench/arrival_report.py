"""bench/arrival.md: the open-loop checkout table, one row per arrival rate."""

from __future__ import annotations

import statistics

from bench.arrival import (
    MAX_FAILED,
    MIN_ACHIEVED,
    P99_BOUND_S,
    REFINE,
    ArrivalResult,
    RateRun,
)
from bench.report import header, percentile
from bench.shop import GATEWAY_ENV

__all__ = ["render_arrival"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def _errors(run: RateRun) -> str:
    if not run.errors:
        return "none"
    return ", ".join(f"{code} {count}" for code, count in sorted(run.errors.items()))


def render_arrival(result: ArrivalResult, command: str) -> str:
    anchor = statistics.median(result.anchor_s)
    unloaded = statistics.median(result.unloaded_s)
    rate_limit = ", ".join(f"{k}={v}" for k, v in GATEWAY_ENV.items())
    lines = [
        *header("checkout latency at fixed arrival rates (open loop, tracing on)", command),
        "Setup: the whole shop on loopback as `make up` runs it (Jaeger, NATS, catalog,"
        " inventory, payments, orders, notifications, gateway), tracing on and every checkout"
        " sampled, MESH_MTLS=off; the gateway's per-caller rate limit is off"
        f" ({rate_limit}), since one client sends every order. One Python grpc.aio client"
        " sends PlaceOrder through the gateway with a bench customer's JWT on one channel,"
        " open loop: order i is sent at t0 + i / rate, whether or not earlier ones have"
        f" answered, for {result.duration_s:g} s or {result.max_orders:,} orders, whichever"
        " comes first;"
        " then every order is awaited (deadline 30 s). Each latency runs from the order's"
        " *scheduled* send time, so time an order waited because the client or the shop was"
        " behind counts (no coordinated omission); 'send lag p99' is how late the client"
        " itself sent. Percentiles are over confirmed orders. Achieved is confirmed orders"
        " over the time from the first scheduled send to the last reply. Each order buys"
        " one unit of the product with the most units left (`bench.stock`, read before"
        " each rate), so none is sold out. Rates run lowest first and stop at the first"
        f" that saturates: achieved under {MIN_ACHIEVED:.0%} of the target, p99 over"
        f" {P99_BOUND_S * 1000:,.0f} ms, or over {MAX_FAILED:.0%} of orders failed; then"
        " a rate halfway between the highest that kept up and the lowest that did not"
        f" (at most {REFINE} such), to place the knee more closely. 'x anchor'"
        f" is p50 over catalog GetProduct direct ({_ms(anchor)} ms median, one at a time,"
        f" same run); 'x unloaded' is p50 over PlaceOrder via the gateway one at a time"
        f" ({_ms(unloaded)} ms median of {len(result.unloaded_s)}, same run).",
        "",
        "| target /s | achieved /s | orders | confirmed | errors | p50 ms | p90 ms | p99 ms"
        " | x anchor | x unloaded | send lag p99 ms |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result.runs:
        p50 = run.quantile_s(0.5)
        ratios = ("-", "-") if p50 is None else (f"{p50 / anchor:,.1f}", f"{p50 / unloaded:,.2f}")
        lag = percentile(run.send_lag_s, 0.99) if run.send_lag_s else None
        lines.append(
            f"| {run.target_per_s:,.0f} | {run.achieved_per_s:,.1f} | {run.sent:,}"
            f" | {run.confirmed:,} | {_errors(run)} | {_ms(p50)} | {_ms(run.quantile_s(0.9))}"
            f" | {_ms(run.quantile_s(0.99))} | {ratios[0]} | {ratios[1]} | {_ms(lag)} |"
        )
    for rate in result.not_run:
        lines.append(f"| {rate:,.0f} | not run | | | | | | | | | |")
    verdict = (
        f"Knee: {result.stopped}."
        if result.stopped
        else f"No saturation up to {result.runs[-1].target_per_s:,.0f}/s."
        if result.runs
        else "No rate ran."
    )
    return "\n".join([*lines, "", verdict]) + "\n"
