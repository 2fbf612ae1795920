"""`make bench`: every part in turn, each into its own file, then bench/results.md.

The parts, in the order they run (`--only PART` runs one of them):
- `anchors` (bench/anchors.md, throughput.png): the floors every figure is
  read against (a bare grpc.aio echo, a grpc-go echo, the echo behind two
  nginx sidecars, catalog direct; ghz cross-checks the client), and their
  throughput against calls in flight (`bench.anchors`, `bench.sweep`);
- `calls` (bench/calls.md, latency-cdf.png): one call per service and
  language direct, and catalog GetProduct and a checkout through the
  gateway, tracing sampled, parent unsampled and off (`bench.calls`);
- `tracing` (bench/tracing.md): what tracing costs catalog, split into
  making spans and exporting them (`bench.tracing_cost`);
- `checkout` (bench/checkout.md): a checkout one at a time, and confirm ->
  notification (`bench.checkout`);
- `arrival` (bench/arrival.md, checkout-arrival.png): checkout latency at
  fixed arrival rates, open loop, up to the knee (`bench.arrival`);
- `gateway` (bench/gateway.md): what our gateway, bare proxies (grpc.aio,
  grpcio sync, grpc-go) and nginx add to a call (`bench.gateway`);
- `mtls` (bench/mtls.md): what the mesh's mTLS and policy add (`bench.mtls`);
- `mesh` (bench/mesh.md): what the whole in-process mesh adds to a hop, and
  how fast an open breaker fails a call (`bench.mesh`);
- `stack` (bench/stack.md): time from start to all healthy, and every
  process's memory after load (`bench.stack`).
Every run ends by assembling bench/results.md from the part files
(`bench.results_doc`). Parts other than `mtls`, `mesh` and `stack` run the
services with MESH_MTLS=off: they measure the services and the gateway;
mtls.md gives what mTLS adds per hop, and mesh.md what everything the mesh
does adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from bench.anchors import ECHO_GO, GHZ, measure_anchors, render_anchors, start_anchors
from bench.arrival import DURATION_S, MAX_ORDERS, RATES, measure_arrival
from bench.arrival_report import render_arrival
from bench.calls import measure, render, start_services
from bench.checkout import measure_checkout, render_checkout, start_mesh
from bench.gateway import NGINX, PROXY_GO, measure_gateways, render_gateway, start_gateways
from bench.mesh import BARE, measure_breaker, measure_hops, render_mesh, start_hops
from bench.mtls import measure_mtls, render_mtls, start_catalogs
from bench.plots import (
    ARRIVAL_PNG,
    CDF_PNG,
    THROUGHPUT_PNG,
    plot_arrival,
    plot_latency_cdf,
    plot_throughput,
)
from bench.results_doc import PARTS, assemble
from bench.shop import Shop, start_shop
from bench.stack import measure_stack, render_stack
from bench.sweep import (
    IN_FLIGHT,
    SWEEP_CALLS,
    SWEEP_ROUNDS,
    measure_sweep,
    render_sweep,
    throughputs,
)
from bench.tracing_cost import measure_tracing, render_tracing, start_tracing
from localmode.processes import Stack
from localmode.topology import REPO_ROOT

BENCH = REPO_ROOT / "bench"
BENCHMARKS = tuple(PARTS)
T = TypeVar("T")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the list of parts
    )
    add = parser.add_argument
    add("--only", choices=BENCHMARKS, help="run one of the parts")
    add("--calls", type=int, default=2000, help="calls per round and target")
    add("--rounds", type=int, default=3)
    add("--concurrency", type=int, nargs="+", default=[1, 32])
    add("--checkout-calls", type=int, default=100, help="checkouts per round in `calls`")
    add("--orders", type=int, default=100, help="sequential orders to time in `checkout`")
    add("--rates", type=float, nargs="+", default=list(RATES), help="arrival rates per second")
    add("--arrival-seconds", type=float, default=DURATION_S, help="how long each rate sends")
    add("--arrival-max-orders", type=int, default=MAX_ORDERS, help="at most this many per rate")
    add("--sweep-in-flight", type=int, nargs="+", default=list(IN_FLIGHT))
    add("--sweep-calls", type=int, default=SWEEP_CALLS, help="calls per round of the sweep")
    add("--nginx", type=Path, default=NGINX, help="the nginx binary to compare with")
    add("--echo-go", type=Path, default=ECHO_GO, help="the grpc-go echo anchor's binary")
    add("--proxy-go", type=Path, default=PROXY_GO, help="the grpc-go bare proxy's binary")
    add("--ghz", type=Path, default=GHZ, help="the ghz binary that cross-checks the client")
    add("--output-dir", type=Path, default=BENCH, help="where the tables and plots go")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    os.environ["MESH_MTLS"] = "off"  # bench.mtls and bench.stack turn it on for their part
    command = "make bench" if not argv else "python -m bench " + " ".join(argv)
    out: Path = args.output_dir
    chosen = BENCHMARKS if args.only is None else (args.only,)
    if "anchors" in chosen:
        with _started(lambda run_dir: start_anchors(run_dir, args.nginx, args.echo_go)) as anchors:
            by_anchor = {
                c: asyncio.run(measure_anchors(anchors, args.calls, args.rounds, c, args.ghz))
                for c in args.concurrency
            }
            swept = asyncio.run(
                measure_sweep(anchors, args.sweep_in_flight, args.sweep_calls, SWEEP_ROUNDS)
            )
        table = render_anchors(by_anchor, anchors, command, args.ghz)
        sweep = render_sweep(swept, args.sweep_calls, SWEEP_ROUNDS)
        _write(out / "anchors.md", table + "\n" + "\n".join(sweep) + "\n")
        print(f"plotted {plot_throughput(throughputs(swept), out / THROUGHPUT_PNG.name)}")
    if "calls" in chosen:
        with _started(start_services) as targets:
            results = {
                c: asyncio.run(measure(targets, args.calls, args.rounds, c, args.checkout_calls))
                for c in args.concurrency
            }
        _write(out / "calls.md", render(results, command))
        print(f"plotted {plot_latency_cdf(results, out / CDF_PNG.name)}")
    if "tracing" in chosen:
        with _started(start_tracing) as catalogs:
            by_row = {
                c: asyncio.run(measure_tracing(catalogs, args.calls, args.rounds, c))
                for c in args.concurrency
            }
        _write(out / "tracing.md", render_tracing(by_row, command))
    if "checkout" in chosen:
        with _started(start_mesh) as mesh:
            checkout = asyncio.run(measure_checkout(mesh, args.orders))
        _write(out / "checkout.md", render_checkout(checkout, command))
    if "arrival" in chosen:
        with _started(_start_traced_shop) as shop:
            arrival = asyncio.run(
                measure_arrival(shop, args.rates, args.arrival_seconds, args.arrival_max_orders)
            )
        _write(out / "arrival.md", render_arrival(arrival, command))
        print(f"plotted {plot_arrival(arrival.runs, out / ARRIVAL_PNG.name)}")
    if "gateway" in chosen:
        with _started(lambda run_dir: start_gateways(run_dir, args.nginx, args.proxy_go)) as paths:
            by_path = {
                c: asyncio.run(measure_gateways(paths.targets, args.calls, args.rounds, c))
                for c in args.concurrency
            }
        _write(out / "gateway.md", render_gateway(by_path, paths, command))
    if "mtls" in chosen:
        with _started(start_catalogs) as endpoints:
            by_mode = {
                c: asyncio.run(measure_mtls(endpoints, args.calls, args.rounds, c))
                for c in args.concurrency
            }
        _write(out / "mtls.md", render_mtls(by_mode, command))
    if "mesh" in chosen:
        with _started(lambda run_dir: start_hops(run_dir, args.nginx)) as started:
            quiet, sampled = asyncio.run(
                measure_hops(started, args.calls, args.rounds, args.concurrency)
            )
            breaker = asyncio.run(measure_breaker(started.endpoints[BARE]))
            started.client_traces.shutdown()
        _write(out / "mesh.md", render_mesh(quiet, sampled, breaker, command, started.nginx))
    if "stack" in chosen:
        with tempfile.TemporaryDirectory(prefix="shopmesh-bench-") as tmp:
            footprint = measure_stack(Path(tmp))
        _write(out / "stack.md", render_stack(footprint, command))
    _write(out / "results.md", assemble(out, command), echo=False)
    return 0


def _start_traced_shop(run_dir: Path) -> tuple[Stack, Shop]:
    stack = Stack(run_dir)
    return stack, start_shop(stack, run_dir)


@contextlib.contextmanager
def _started(start: Callable[[Path], tuple[Stack, T]]) -> Iterator[T]:
    """What `start` starts in a temporary folder; stopped, and the folder gone, after."""
    with tempfile.TemporaryDirectory(prefix="shopmesh-bench-") as tmp:
        stack, started = start(Path(tmp))
        try:
            yield started
        finally:
            stack.stop()


def _write(path: Path, text: str, echo: bool = True) -> None:
    path.write_text(text)
    if echo:
        print(text)
    print(f"written to {path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
