"""Throughput against calls in flight for the anchors and catalog direct (part of `anchors`).

The anchors' table gives 1 and 32 in flight; the sweep fills in the curve
between and past them (1 to 64, doubling) with fewer calls per point, to
show where each target stops gaining from more calls in flight: a server
that is out of CPU (the machine has 2 cores, shared with the client) only
queues them. Same client, same interleaved rounds as every table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.anchors import BARE, Anchors
from bench.load import Prepare, Sample, interleave
from bench.report import percentile

__all__ = ["IN_FLIGHT", "SWEEP_CALLS", "measure_sweep", "render_sweep", "throughputs"]

IN_FLIGHT = (1, 2, 4, 8, 16, 32, 64)
SWEEP_CALLS = 1000  # per round and target: enough for a rate, not for a p99
SWEEP_ROUNDS = 2


async def measure_sweep(
    anchors: Anchors,
    in_flight: Sequence[int] = IN_FLIGHT,
    calls: int = SWEEP_CALLS,
    rounds: int = SWEEP_ROUNDS,
) -> dict[int, dict[str, Sample]]:
    targets: dict[str, tuple[Prepare, str]] = dict(anchors.targets)
    return {n: await interleave(targets, calls, rounds, n) for n in in_flight}


def throughputs(results: Mapping[int, Mapping[str, Sample]]) -> dict[str, dict[int, float]]:
    """target -> calls in flight -> calls per second."""
    by_target: dict[str, dict[int, float]] = {}
    for concurrency, by_label in results.items():
        for label, sample in by_label.items():
            rate = len(sample.latencies_s) / sample.elapsed_s if sample.elapsed_s else 0.0
            by_target.setdefault(label, {})[concurrency] = rate
    return by_target


def render_sweep(results: Mapping[int, Mapping[str, Sample]], calls: int, rounds: int) -> list[str]:
    """A section for anchors.md: calls/s per target and calls in flight, and x echo."""
    lines = [
        "## Throughput against calls in flight",
        "",
        f"The same targets and client, {calls:,} calls x {rounds} interleaved rounds per"
        " point (fewer than above: a rate, not a p99). 'x echo' is calls/s over the bare"
        " echo's at the same calls in flight. Plot: [throughput.png](throughput.png).",
        "",
        "| in flight | target | calls/s | x echo | median ms | p99 ms |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    rates = throughputs(results)
    for concurrency, by_label in results.items():
        base = rates.get(BARE, {}).get(concurrency)
        for label, sample in by_label.items():
            rate = rates[label][concurrency]
            ratio = f"{rate / base:.2f}" if base else "-"
            lat = sorted(sample.latencies_s)
            lines.append(
                f"| {concurrency} | {label} | {rate:,.0f} | {ratio} "
                f"| {lat[len(lat) // 2] * 1000:.3f} | {percentile(lat, 0.99) * 1000:.3f} |"
            )
    return lines
