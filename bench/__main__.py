"""Measures one call of each service in its own language, tracing on and off.

catalog `GetProduct` (Python), inventory `GetStock` (Go) and payments
`GetPayment` (TypeScript) each run twice at once on free ports: one exporting
every span to a real Jaeger, one with OTEL_SDK_DISABLED=true. Rounds go over
every (call, mode) pair in turn so that machine noise hits all alike. Each
call's latency is taken on the client; the table gives median, p99 and
throughput per concurrency, plus each median as a ratio to catalog's
GetProduct in the same mode and run, and is written to bench/results.md with
the command that made it. Then `bench.checkout` times whole checkouts
(PlaceOrder end to end, confirm -> notification) into bench/checkout.md, and
`bench.gateway` what our gateway, a bare grpc.aio proxy and nginx add to a
call into bench/gateway.md, and `bench.mtls` what the mesh's mTLS and policy
add to one into bench/mtls.md, and `bench.mesh` what the whole in-process
mesh adds to a hop and how fast an open breaker fails a call into
bench/mesh.md, and `bench.stack` the time from start to all healthy and
every process's memory into bench/stack.md. First of all,
`bench.anchors` measures the floors every figure is read against (a bare
grpc.aio echo, a grpc-go echo, the echo behind two nginx sidecars, catalog
direct; ghz cross-checks the client) into bench/anchors.md. `--only
anchors|calls|checkout|gateway|mtls|mesh|stack` runs one of them.
The first three run the services with MESH_MTLS=off: they measure the
services and the gateway; bench/mtls.md gives what mTLS adds per hop, and
bench/mesh.md what everything the mesh does adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc

from bench.anchors import ECHO_GO, GHZ, measure_anchors, render_anchors, start_anchors
from bench.checkout import measure_checkout, render_checkout, start_mesh
from bench.gateway import NGINX, measure_gateways, render_gateway, start_gateways
from bench.load import Call, Metadata, Prepare, Sample, get_product, interleave
from bench.mesh import BARE, measure_breaker, measure_hops, render_mesh, start_hops
from bench.mtls import measure_mtls, render_mtls, start_catalogs
from bench.report import header, percentile
from bench.stack import measure_stack, render_stack
from localmode.processes import Stack, free_port, start_all
from localmode.topology import REPO_ROOT, LocalService, Topology
from shop.common.v1.common_pb2 import Money
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

RESULTS = REPO_ROOT / "bench" / "results.md"
CHECKOUT_RESULTS = REPO_ROOT / "bench" / "checkout.md"
GATEWAY_RESULTS = REPO_ROOT / "bench" / "gateway.md"
MTLS_RESULTS = REPO_ROOT / "bench" / "mtls.md"
MESH_RESULTS = REPO_ROOT / "bench" / "mesh.md"
STACK_RESULTS = REPO_ROOT / "bench" / "stack.md"
ANCHORS_RESULTS = REPO_ROOT / "bench" / "anchors.md"
BENCHMARKS = ("anchors", "calls", "checkout", "gateway", "mtls", "mesh", "stack")
SAMPLED = "tracing on, sampled"
UNSAMPLED = "tracing on, parent unsampled"
OFF = "tracing off"
MODES = (SAMPLED, UNSAMPLED, OFF)
# A caller whose trace is not sampled (W3C flags 00): the service must follow
# its decision, recording nothing and passing the context on.
UNSAMPLED_PARENT: Metadata = (("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-00"),)


async def get_stock(channel: grpc.aio.Channel, metadata: Metadata = ()) -> Call:
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    request = inventory_pb2.GetStockRequest(product_ids=["prod-chemex"])
    return lambda: stub.GetStock(request, timeout=5, metadata=metadata)


async def get_payment(channel: grpc.aio.Channel, metadata: Metadata = ()) -> Call:
    """Charges once (idempotent by key), then reads that payment back."""
    stub = payments_pb2_grpc.PaymentsServiceStub(channel)
    card = payments_pb2.Card(
        number="4242424242424242",
        expiry_month=12,
        expiry_year=datetime.now(UTC).year + 1,
        cvc="123",
    )
    charged = await stub.Charge(
        payments_pb2.ChargeRequest(
            idempotency_key="bench",
            order_id="order-bench",
            amount=Money(currency_code="EUR", amount_minor=4950),
            card=card,
        ),
        timeout=5,
    )
    request = payments_pb2.GetPaymentRequest(id=charged.payment.id)
    return lambda: stub.GetPayment(request, timeout=5, metadata=metadata)


# A channel and the metadata every call sends -> the call to repeat.
PrepareWith = Callable[[grpc.aio.Channel, Metadata], Awaitable[Call]]


@dataclass(frozen=True)
class Scenario:
    label: str  # how the table names it
    service: str  # compose.yaml service
    prepare: PrepareWith


def _sending(prepare: PrepareWith, metadata: Metadata) -> Prepare:
    async def prepared(channel: grpc.aio.Channel) -> Call:
        return await prepare(channel, metadata)

    return prepared


SCENARIOS = (
    Scenario("catalog GetProduct (Python)", "catalog", get_product),
    Scenario("inventory GetStock (Go)", "inventory", get_stock),
    Scenario("payments GetPayment (TypeScript)", "payments", get_payment),
)
ANCHOR = SCENARIOS[0].label


Key = tuple[str, str]  # (scenario label, mode)
T = TypeVar("T")


async def measure(
    targets: dict[Key, str], calls: int, rounds: int, concurrency: int
) -> dict[Key, Sample]:
    scenarios = {s.label: s for s in SCENARIOS}
    prepared: dict[Key, tuple[Prepare, str]] = {}
    for (label, mode), target in targets.items():
        metadata = UNSAMPLED_PARENT if mode == UNSAMPLED else ()
        prepared[label, mode] = (_sending(scenarios[label].prepare, metadata), target)
    return await interleave(prepared, calls, rounds, concurrency)


def _untraced(service: LocalService) -> LocalService:
    """A second copy of `service` on a port of its own, with tracing off."""
    port = free_port()
    own = service.grpc_target
    assert own is not None
    run_dir = service.run_dir.parent / f"{service.name}-untraced"
    env = {  # its own address and its own database
        key: value.replace(own, f"127.0.0.1:{port}").replace(str(service.run_dir), str(run_dir))
        for key, value in service.environment.items()
    }
    return replace(
        service,
        name=f"{service.name}-untraced",
        environment={**env, "OTEL_SDK_DISABLED": "true"},
        ready=f"grpc://127.0.0.1:{port}",
        run_dir=run_dir,
    )


def start_services(run_dir: Path) -> tuple[Stack, dict[Key, str]]:
    topology = Topology.load()
    ports = {key: free_port() for key in topology.default_ports()}
    services = [topology.resolve("jaeger", ports, run_dir / "jaeger")]
    targets: dict[Key, str] = {}
    for scenario in SCENARIOS:
        traced = topology.resolve(scenario.service, ports, run_dir / scenario.service)
        # Tracing is what differs; neither copy serves metrics (one port each).
        traced = replace(traced, environment={**traced.environment, "MESH_METRICS_ADDRESS": ""})
        untraced = _untraced(traced)
        services += [traced, untraced]
        for mode, service in zip(MODES, (traced, traced, untraced), strict=True):
            assert service.grpc_target is not None
            targets[scenario.label, mode] = service.grpc_target
    for service in services:
        (service.run_dir / "data").mkdir(parents=True, exist_ok=True)
    stack = Stack(run_dir)
    start_all(stack, services)
    return stack, targets


def render(results: dict[int, dict[Key, Sample]], command: str) -> str:
    lines = [
        *header("one call per service and language, tracing sampled, unsampled and off", command),
        "Setup: one Python grpc.aio client process; each service runs twice on loopback: one"
        " with tracing on (spans batch-exported over OTLP gRPC to a real Jaeger), one with"
        f" OTEL_SDK_DISABLED=true ('{OFF}'). The traced copy takes calls without trace"
        f" context ('{SAMPLED}': the call starts a trace, sampled) and calls whose"
        f" traceparent says not sampled ('{UNSAMPLED}': nothing should be recorded). Rounds"
        " go over every call and mode in turn. 'x anchor' is the median divided by"
        f" {ANCHOR}'s in the same mode and run; 'x off' is the throughput over the same"
        " call's with tracing off.",
        "",
        "| in flight | call | mode | calls | median ms | p99 ms | calls/s | x anchor | x off |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, by_key in results.items():
        for (label, mode), sample in by_key.items():
            lat = sample.latencies_s
            anchor = statistics.median(by_key[ANCHOR, mode].latencies_s)
            off = by_key[label, OFF]
            throughput = len(lat) / sample.elapsed_s
            lines.append(
                f"| {concurrency} | {label} | {mode} | {len(lat)} "
                f"| {statistics.median(lat) * 1000:.3f} | {percentile(lat, 0.99) * 1000:.3f} "
                f"| {throughput:,.0f} | {statistics.median(lat) / anchor:.2f} "
                f"| {throughput / (len(off.latencies_s) / off.elapsed_s):.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--calls", type=int, default=2000, help="calls per round and target (calls, gateway)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--orders", type=int, default=100, help="sequential orders to time")
    parser.add_argument("--checkout-output", type=Path, default=CHECKOUT_RESULTS)
    parser.add_argument("--gateway-output", type=Path, default=GATEWAY_RESULTS)
    parser.add_argument(
        "--nginx", type=Path, default=NGINX, help="the nginx binary to compare with"
    )
    parser.add_argument("--mtls-output", type=Path, default=MTLS_RESULTS)
    parser.add_argument("--mesh-output", type=Path, default=MESH_RESULTS)
    parser.add_argument("--stack-output", type=Path, default=STACK_RESULTS)
    parser.add_argument("--anchors-output", type=Path, default=ANCHORS_RESULTS)
    parser.add_argument(
        "--echo-go", type=Path, default=ECHO_GO, help="the grpc-go echo anchor's binary"
    )
    parser.add_argument(
        "--ghz", type=Path, default=GHZ, help="the ghz binary that cross-checks the client"
    )
    parser.add_argument("--only", choices=BENCHMARKS, help="run one of the benchmarks")
    args = parser.parse_args(argv)
    os.environ["MESH_MTLS"] = "off"  # bench.mtls turns it on for what it measures
    command = "make bench" if not argv else "python -m bench " + " ".join(argv)
    chosen = BENCHMARKS if args.only is None else (args.only,)
    if "anchors" in chosen:
        with _started(lambda run_dir: start_anchors(run_dir, args.nginx, args.echo_go)) as anchors:
            by_anchor = {
                c: asyncio.run(measure_anchors(anchors, args.calls, args.rounds, c, args.ghz))
                for c in args.concurrency
            }
        _write(args.anchors_output, render_anchors(by_anchor, anchors, command, args.ghz))
    if "calls" in chosen:
        with _started(start_services) as targets:
            results = {
                c: asyncio.run(measure(targets, args.calls, args.rounds, c))
                for c in args.concurrency
            }
        _write(args.output, render(results, command))
    if "checkout" in chosen:
        with _started(start_mesh) as mesh:
            checkout = asyncio.run(measure_checkout(mesh, args.orders))
        _write(args.checkout_output, render_checkout(checkout, command))
    if "gateway" in chosen:
        with _started(lambda run_dir: start_gateways(run_dir, args.nginx)) as paths:
            by_path = {
                c: asyncio.run(measure_gateways(paths.targets, args.calls, args.rounds, c))
                for c in args.concurrency
            }
        _write(args.gateway_output, render_gateway(by_path, paths.nginx, command))
    if "mtls" in chosen:
        with _started(start_catalogs) as endpoints:
            by_mode = {
                c: asyncio.run(measure_mtls(endpoints, args.calls, args.rounds, c))
                for c in args.concurrency
            }
        _write(args.mtls_output, render_mtls(by_mode, command))
    if "mesh" in chosen:
        with _started(start_hops) as started:
            hops = {
                c: asyncio.run(measure_hops(started.endpoints, args.calls, args.rounds, c))
                for c in args.concurrency
            }
            breaker = asyncio.run(measure_breaker(started.endpoints[BARE]))
            started.client_traces.shutdown()
        _write(args.mesh_output, render_mesh(hops, breaker, command))
    if "stack" in chosen:
        with tempfile.TemporaryDirectory(prefix="shopmesh-bench-") as tmp:
            footprint = measure_stack(Path(tmp))
        _write(args.stack_output, render_stack(footprint, command))
    return 0


@contextlib.contextmanager
def _started(start: Callable[[Path], tuple[Stack, T]]) -> Iterator[T]:
    """What `start` starts in a temporary folder; stopped, and the folder gone, after."""
    with tempfile.TemporaryDirectory(prefix="shopmesh-bench-") as tmp:
        stack, started = start(Path(tmp))
        try:
            yield started
        finally:
            stack.stop()


def _write(path: Path, table: str) -> None:
    path.write_text(table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
