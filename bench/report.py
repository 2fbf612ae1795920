"""What every results file of `make bench` starts with, and the percentile both tables use."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Mapping
from datetime import UTC, datetime

from bench.load import Sample


def header(title: str, command: str) -> list[str]:
    return [
        f"# Benchmark: {title}",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", {platform.system()} {platform.release()}  ",
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def against_base(
    results: Mapping[int, Mapping[str, Sample]], base: str, column: str, ratio: str
) -> list[str]:
    """A table of each mode's latency against `base`'s at the same concurrency:
    'added µs' is a mode's median minus the base's, `ratio` their quotient."""
    lines = [
        f"| in flight | {column} | calls | median ms | p99 ms | calls/s | added µs | {ratio} |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, by_mode in results.items():
        reference = statistics.median(by_mode[base].latencies_s)
        for mode, sample in by_mode.items():
            lat = sample.latencies_s
            median = statistics.median(lat)
            added = "" if mode == base else f"{(median - reference) * 1e6:,.0f}"
            lines.append(
                f"| {concurrency} | {mode} | {len(lat)} | {median * 1000:.3f} "
                f"| {percentile(lat, 0.99) * 1000:.3f} | {sample.calls_per_second:,.0f} "
                f"| {added} | {median / reference:.2f} |"
            )
    return lines
