"""What the whole in-process mesh costs a hop, and how fast an open breaker fails a call.

Per hop: catalog GetProduct, called twice in the same run:
- bare: a plain grpc.aio channel to a catalog with every mesh feature off
  (MESH_MTLS=off, OTEL_SDK_DISABLED=true, no metrics, no fault file, no
  concurrency limit): grpc.aio and the servicer, nothing else;
- mesh: the client as the gateway calls it (`mesh.channels.Channels` with the
  traffic policy: deadline propagation, retry service config and throttling,
  the circuit breaker, client metrics; tracing spans exported to a real
  Jaeger; the gateway's mTLS certificate) to a catalog as deployed (mTLS and
  the policy, tracing into the same Jaeger, RED metrics, a fault file
  looked at every second, the concurrency limit, deadline scope).
Rounds alternate, one connection each, its first call outside the clock.

Breaker: with catalog's breaker open (its upstream a dead port), how long a
refused call takes, next to a bare GetProduct at 1 in flight and to a call
failing on its own against the dead port without a breaker.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider

from bench.load import Endpoint, Sample, get_product, interleave
from bench.report import against_base, header, percentile
from localmode.processes import Stack, free_port, start_all
from localmode.topology import Topology
from mesh import metrics
from mesh.breaker import BreakerState
from mesh.channels import Channels
from mesh.tls import MeshSecurity
from mesh.traffic_file import DEFAULT_TRAFFIC_FILE, load_traffic
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tracing.interceptors import client_interceptors
from tracing.provider import build_tracer_provider

__all__ = ["Hops", "measure_breaker", "measure_hops", "render_mesh", "start_hops"]

BARE = "bare grpc.aio"
MESH = "whole mesh"
BARE_ENV = {
    "MESH_MTLS": "off",
    "OTEL_SDK_DISABLED": "true",
    "MESH_METRICS_ADDRESS": "",
    "MESH_FAULTS_FILE": "",
    "GRPC_MAX_CONCURRENT_RPCS": "0",
}
BREAKER_CALLS = 2000
UNGUARDED_CALLS = 200


@dataclass(frozen=True)
class Hops:
    endpoints: dict[str, Endpoint]  # mode -> how the client reaches its catalog
    client_traces: TracerProvider  # to flush before Jaeger stops


def start_hops(run_dir: Path) -> tuple[Stack, Hops]:
    """Jaeger and both catalogs, started, and the client's side of the mesh."""
    topology = Topology.load(replicas={"catalog": 1})
    ports = {key: free_port() for key in topology.default_ports()}
    jaeger = topology.resolve("jaeger", ports, run_dir / "jaeger")
    mesh = topology.resolve("catalog", ports, run_dir / "mesh")
    mesh_env = {"MESH_MTLS": "on", "MESH_FAULTS_FILE": str(run_dir / "faults.yaml")}
    mesh = replace(mesh, name="catalog-mesh", environment={**mesh.environment, **mesh_env})
    bare_ports = {key: free_port() for key in topology.default_ports()}
    bare = topology.resolve("catalog", bare_ports, run_dir / "bare")
    bare = replace(bare, name="catalog-bare", environment={**bare.environment, **BARE_ENV})
    stack = Stack(run_dir)
    start_all(stack, [jaeger, mesh, bare])

    # The client's side of the mesh, as the gateway has it.
    otlp = f"127.0.0.1:{jaeger.ports[4317]}"
    provider = build_tracer_provider(
        "bench-client", "bench", exporter=OTLPSpanExporter(endpoint=otlp, insecure=True)
    )
    metrics.serve_metrics("127.0.0.1:0", "gateway")
    traffic = load_traffic(DEFAULT_TRAFFIC_FILE)
    certs = Path(mesh.environment["MESH_CERTS_DIR"])  # made by local mode at start
    security = MeshSecurity(enabled=True, certs_dir=certs, service="gateway")
    address = str(mesh.grpc_target)

    def mesh_channel() -> grpc.aio.Channel:
        channels = Channels(client_interceptors(provider), security=security, traffic=traffic)
        return channels.get(address, "catalog")

    endpoints = {
        BARE: Endpoint(str(bare.grpc_target)),
        MESH: Endpoint(address, factory=mesh_channel),
    }
    return stack, Hops(endpoints, provider)


async def measure_hops(
    endpoints: dict[str, Endpoint], calls: int, rounds: int, concurrency: int
) -> dict[str, Sample]:
    prepared = {mode: (get_product, endpoint) for mode, endpoint in endpoints.items()}
    return await interleave(prepared, calls, rounds, concurrency)


async def _timed(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call()
        latencies.append(time.perf_counter() - start)
    return latencies


async def measure_breaker(bare: Endpoint) -> dict[str, list[float]]:
    """Latencies of: a bare GetProduct; a call refused by an open breaker; a
    call failing against a dead port on a plain channel (no breaker)."""
    request = catalog_pb2.GetProductRequest(id="prod-chemex")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    channels = Channels(security=MeshSecurity(), traffic=load_traffic(DEFAULT_TRAFFIC_FILE))
    guarded = catalog_pb2_grpc.CatalogServiceStub(channels.get(dead, "catalog"))
    breaker = None
    for _ in range(20):  # until the failures open it
        await _timed(lambda: guarded.GetProduct(request, timeout=5), 1)
        breaker = channels.breaker(dead)
        if breaker is not None and breaker.breaker.state is BreakerState.OPEN:
            break
    assert breaker is not None
    assert breaker.breaker.state is BreakerState.OPEN
    refused = await _timed(lambda: guarded.GetProduct(request, timeout=5), BREAKER_CALLS)
    assert breaker.rejected >= BREAKER_CALLS  # still open: none reached the dead port
    await channels.close()
    async with grpc.aio.insecure_channel(dead) as plain:
        stub = catalog_pb2_grpc.CatalogServiceStub(plain)
        unguarded = await _timed(lambda: stub.GetProduct(request, timeout=5), UNGUARDED_CALLS)
    async with bare.channel() as channel:
        live = catalog_pb2_grpc.CatalogServiceStub(channel)
        await live.GetProduct(request, timeout=5)
        anchor = await _timed(lambda: live.GetProduct(request, timeout=5), BREAKER_CALLS)
    return {
        "bare GetProduct (anchor)": anchor,
        "refused by the open breaker": refused,
        "dead port, plain channel, no breaker": unguarded,
    }


def render_mesh(
    hops: dict[int, dict[str, Sample]], breaker: dict[str, list[float]], command: str
) -> str:
    lines = [
        *header("what the whole in-process mesh adds to a hop; an open breaker's refusal", command),
        "Setup: one Python grpc.aio client process; two catalog processes (Python) on loopback."
        f" '{BARE}': a plain channel to a catalog with every mesh feature off (MESH_MTLS=off,"
        " OTEL_SDK_DISABLED=true, no metrics, no fault file, GRPC_MAX_CONCURRENT_RPCS=0)."
        f" '{MESH}': the client as the gateway has it (mesh.channels.Channels with"
        " mesh/traffic.yaml: deadline propagation, retry service config and throttling, the"
        " circuit breaker, client RED metrics; OpenTelemetry client spans exported to a real"
        " Jaeger; mTLS with the gateway's certificate) to a catalog as deployed (mTLS and the"
        " authorization policy, server spans into the same Jaeger, RED metrics, a fault file"
        " looked at every second, the concurrency limit, deadline scope). One connection per"
        " round, its first call outside the clock; rounds alternate. 'added' is the mesh"
        " median minus the bare one at the same concurrency; 'x bare' their ratio.",
        "",
        *against_base(hops, BARE, "hop", "x bare"),
    ]
    anchor = statistics.median(next(iter(breaker.values())))
    lines += [
        "",
        "How long a call takes to fail once catalog's breaker is open (its upstream a port"
        " nothing listens on), one call at a time, next to a bare GetProduct of the live"
        " catalog and to a call failing on its own against the dead port on a plain channel"
        " (no breaker, no retries). 'x anchor' is the median over the bare GetProduct's.",
        "",
        "| call | calls | median µs | p99 µs | x anchor |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, lat in breaker.items():
        median = statistics.median(lat)
        lines.append(
            f"| {label} | {len(lat)} | {median * 1e6:,.0f} | {percentile(lat, 0.99) * 1e6:,.0f} "
            f"| {median / anchor:.2f} |"
        )
    return "\n".join(lines) + "\n"
