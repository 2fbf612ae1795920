"""The local stack's footprint: time from start to all healthy, and memory after load.

Every process of `make up` (Jaeger, NATS and the six services, mTLS on as
deployed) starts on free ports, one after another as `make up` starts them,
each waited for until its readiness probe passes; the time is taken for each
and for the whole. Then a load goes through the gateway, as a shopper's
would (browsing and checkouts with a demo token), and each process's
resident memory (VmRSS from /proc) is read.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from bench.checkout import PRODUCT, order_request
from bench.report import header
from gateway.auth import mint_token
from gateway.config import AuthConfig
from localmode.processes import Stack, free_port
from localmode.topology import LocalService, Topology
from mesh.config import Env
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.orders.v1 import orders_pb2_grpc

__all__ = ["StackFootprint", "measure_stack", "render_stack"]

BROWSES = 500
CHECKOUTS = 50


@dataclass
class StackFootprint:
    ready_s: dict[str, float]  # process -> seconds from its start to ready
    total_s: float  # from the first start to the last ready
    rss_mib: dict[str, float]  # process -> resident memory after the load
    calls: int  # the load


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _load(gateway: LocalService) -> int:
    auth = AuthConfig.from_env(Env({**os.environ, **gateway.environment}))
    customer = f"cus-bench-{uuid.uuid4().hex[:6]}"
    token = (("authorization", f"Bearer {mint_token(auth, customer, 600)}"),)
    async with grpc.aio.insecure_channel(str(gateway.grpc_target)) as channel:
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        orders = orders_pb2_grpc.OrdersServiceStub(channel)
        product = catalog_pb2.GetProductRequest(id=PRODUCT)
        for _ in range(BROWSES):
            await catalog.GetProduct(product, timeout=5)
        for _ in range(CHECKOUTS):
            await orders.PlaceOrder(order_request(customer), metadata=token, timeout=10)
    return BROWSES + CHECKOUTS


def measure_stack(run_dir: Path) -> StackFootprint:
    topology = Topology.load(replicas={"catalog": 1})
    ports = {key: free_port() for key in topology.default_ports()}
    # The load comes from one client as fast as it can: the gateway's
    # per-client rate limit would refuse most of it.
    extra = {"MESH_MTLS": "on", "GATEWAY_RATE_PER_SECOND": "0"}
    services = [
        replace(s, environment={**s.environment, **extra})
        for s in (topology.resolve(name, ports, run_dir) for name in topology.names)
    ]
    stack = Stack(run_dir)
    ready: dict[str, float] = {}
    began = time.monotonic()
    try:
        for service in services:
            started = time.monotonic()
            stack.start(service)
            ready[service.name] = time.monotonic() - started
        total = time.monotonic() - began
        by_name = {s.name: s for s in services}
        calls = asyncio.run(_load(by_name["gateway"]))
        rss = {}
        for name in ready:
            pid = stack.pid(name)
            rss[name] = 0.0 if pid is None else _rss_mib(pid)
    finally:
        stack.stop()
    return StackFootprint(ready, total, rss, calls)


def render_stack(result: StackFootprint, command: str) -> str:
    lines = [
        *header("the local stack: time to all healthy, and memory after load", command),
        "Setup: every process of `make up` (mTLS on) on free ports, started one after another"
        " as `make up` does, each until its readiness probe passes (gRPC health over mTLS, or"
        f" HTTP for Jaeger and NATS); then {BROWSES} GetProduct and {CHECKOUTS} checkouts"
        " through the gateway with a demo token (its rate limit off: one client), one at a"
        " time; then each process's VmRSS.",
        "",
        f"All healthy {result.total_s:.1f} s after the first start; {result.calls} calls of"
        f" load; {sum(result.rss_mib.values()):,.0f} MiB resident in all.",
        "",
        "| process | ready after s | resident MiB |",
        "|---|---:|---:|",
    ]
    for name, seconds in result.ready_s.items():
        lines.append(f"| {name} | {seconds:.2f} | {result.rss_mib.get(name, 0.0):,.1f} |")
    lines.append(
        f"| **all** | **{result.total_s:.2f}** | **{sum(result.rss_mib.values()):,.1f}** |"
    )
    return "\n".join(lines) + "\n"
