"""Measures GetProduct latency against real catalog processes, tracing on and off.

Both catalogs run at once on free ports (one exporting to a real Jaeger, one
with OTEL_SDK_DISABLED=true), and the rounds alternate between them so that
machine noise hits both alike. Each call's latency is taken on the client; the
table gives median, p99 and throughput per mode and concurrency, and is
written to bench/results.md together with the command that made it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc

from localmode.processes import Stack, free_port, start_all
from localmode.topology import REPO_ROOT, Topology
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

RESULTS = REPO_ROOT / "bench" / "results.md"


@dataclass
class Sample:
    latencies_s: list[float]
    elapsed_s: float


async def _round(target: str, calls: int, concurrency: int) -> Sample:
    request = catalog_pb2.GetProductRequest(id="prod-chemex")
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        await stub.GetProduct(request, timeout=5)  # connect outside the clock
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                await stub.GetProduct(request, timeout=5)
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return Sample(latencies, elapsed)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    targets: dict[str, str], calls: int, rounds: int, concurrency: int
) -> dict[str, Sample]:
    merged = {mode: Sample([], 0.0) for mode in targets}
    for target in targets.values():  # warm-up, not recorded
        await _round(target, min(calls, 500), concurrency)
    for _ in range(rounds):
        for mode, target in targets.items():
            sample = await _round(target, calls, concurrency)
            merged[mode].latencies_s += sample.latencies_s
            merged[mode].elapsed_s += sample.elapsed_s
    return merged


def start_catalogs(run_dir: Path) -> tuple[Stack, dict[str, str]]:
    topology = Topology.load()
    ports = {key: free_port() for key in topology.default_ports()}
    jaeger = topology.resolve("jaeger", ports, run_dir / "jaeger")
    traced = topology.resolve("catalog", ports, run_dir / "traced")
    untraced_port = free_port()
    base = topology.resolve("catalog", ports, run_dir / "untraced")
    untraced = replace(
        base,
        name="catalog-untraced",
        environment={
            **base.environment,
            "GRPC_LISTEN_ADDR": f"127.0.0.1:{untraced_port}",
            "OTEL_SDK_DISABLED": "true",
        },
        ready=f"grpc://127.0.0.1:{untraced_port}",
    )
    stack = Stack(run_dir)
    start_all(stack, [jaeger, traced, untraced])
    targets = {"tracing on": traced.grpc_target, "tracing off": untraced.grpc_target}
    return stack, {mode: target for mode, target in targets.items() if target is not None}


def render(results: dict[int, dict[str, Sample]], command: str) -> str:
    lines = [
        "# Benchmark: catalog GetProduct, tracing on vs off",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", {platform.system()} {platform.release()}  ",
        "Setup: one Python grpc.aio client process and two catalog processes on loopback;"
        " 'tracing on' samples every span and batch-exports over OTLP gRPC to a real Jaeger,"
        " 'tracing off' runs with OTEL_SDK_DISABLED=true. Rounds alternate between the two.",
        "",
        "| in flight | mode | calls | median ms | p99 ms | calls/s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for concurrency, by_mode in results.items():
        for mode, sample in by_mode.items():
            lat = sample.latencies_s
            lines.append(
                f"| {concurrency} | {mode} | {len(lat)} | {statistics.median(lat) * 1000:.3f} "
                f"| {_p(lat, 0.99) * 1000:.3f} | {len(lat) / sample.elapsed_s:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = "make bench" if not argv else "python -m bench " + " ".join(argv)
    with tempfile.TemporaryDirectory(prefix="shopmesh-bench-") as tmp:
        stack, targets = start_catalogs(Path(tmp))
        try:
            results = {
                c: asyncio.run(measure(targets, args.calls, args.rounds, c))
                for c in args.concurrency
            }
        finally:
            stack.stop()
    table = render(results, command)
    args.output.write_text(table)
    print(table)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
