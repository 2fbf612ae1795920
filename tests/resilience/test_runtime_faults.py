"""Faults switched on and off at run time, without a restart, in all three languages.

catalog (Python), inventory (Go) and payments (TypeScript) run as processes
reading one fault file. `python -m mesh.faultctl` (what `make fault` runs)
injects a fault into one method of each: within a few seconds that method
fails with the chosen code and `injected fault in <method>`, while another
method of the same service and its health check still answer. `clear` turns
every fault off again, and the same processes answer as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh import faultctl
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.conftest import StartStack

QUIET = {"OTEL_SDK_DISABLED": "true"}
TIMEOUT = 5.0
Call = Callable[[grpc.aio.Channel], Awaitable[object]]

# service -> (method faulted, code, a call of it, a call of another method)
CASES: dict[str, tuple[str, grpc.StatusCode, Call, Call]] = {
    "catalog": (
        "/shop.catalog.v1.CatalogService/GetProduct",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda ch: catalog_pb2_grpc.CatalogServiceStub(ch).GetProduct(
            catalog_pb2.GetProductRequest(id="prod-chemex"), timeout=TIMEOUT
        ),
        lambda ch: catalog_pb2_grpc.CatalogServiceStub(ch).ListProducts(
            catalog_pb2.ListProductsRequest(page_size=1), timeout=TIMEOUT
        ),
    ),
    "inventory": (
        "/shop.inventory.v1.InventoryService/GetStock",
        grpc.StatusCode.UNAVAILABLE,
        lambda ch: inventory_pb2_grpc.InventoryServiceStub(ch).GetStock(
            inventory_pb2.GetStockRequest(product_ids=["prod-chemex"]), timeout=TIMEOUT
        ),
        lambda ch: inventory_pb2_grpc.InventoryServiceStub(ch).ReleaseStock(
            inventory_pb2.ReleaseStockRequest(order_id="ord-none"), timeout=TIMEOUT
        ),
    ),
    "payments": (
        "/shop.payments.v1.PaymentsService/GetPayment",
        grpc.StatusCode.INTERNAL,
        lambda ch: payments_pb2_grpc.PaymentsServiceStub(ch).GetPayment(
            payments_pb2.GetPaymentRequest(id="pay-none"), timeout=TIMEOUT
        ),
        lambda ch: payments_pb2_grpc.PaymentsServiceStub(ch).ResolveCharge(
            payments_pb2.ResolveChargeRequest(idempotency_key="key-none"), timeout=TIMEOUT
        ),
    ),
}


async def _outcome(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _injected(outcome: tuple[grpc.StatusCode, str]) -> bool:
    return outcome[1].startswith("injected fault")


async def test_faults_switch_on_and_off_without_a_restart(
    start_stack: StartStack, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.yaml"
    env = {name: {**QUIET, "MESH_FAULTS_FILE": str(faults)} for name in CASES}
    shop = start_stack(list(CASES), env=env)
    channels = {name: grpc.aio.insecure_channel(str(shop[name].grpc_target)) for name in CASES}
    pids = {name: shop[name].run_dir / "pids" / f"{name}.json" for name in CASES}
    started = {name: path.read_text() for name, path in pids.items()}
    try:
        before = {name: await _outcome(case[2](channels[name])) for name, case in CASES.items()}
        assert not any(_injected(outcome) for outcome in before.values()), before

        for name, (method, code, _, _) in CASES.items():
            short = method.rsplit("/", 1)[1]
            args = ["set", name, "--method", short, "--error-ratio", "1", "--code", code.name]
            assert faultctl.main(["--file", str(faults), *args]) == 0
        for name, (method, code, faulted, other) in CASES.items():
            channel = channels[name]
            await _eventually(faulted, channel, injected=True)
            assert await _outcome(faulted(channel)) == (code, f"injected fault in {method}")
            assert not _injected(await _outcome(other(channel)))
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        assert faultctl.main(["--file", str(faults), "clear"]) == 0
        for name, (_, _, faulted, _) in CASES.items():
            channel = channels[name]
            await _eventually(faulted, channel, injected=False)
            assert await _outcome(faulted(channel)) == before[name]
        # The same processes all along.
        assert {name: path.read_text() for name, path in pids.items()} == started
    finally:
        for channel in channels.values():
            await channel.close(None)


async def _eventually(call: Call, channel: grpc.aio.Channel, *, injected: bool) -> None:
    """Calls until the answer is (or is no longer) an injected fault: each
    service looks at the file at most once a second, on a call."""
    deadline = time.monotonic() + 15
    while _injected(await _outcome(call(channel))) != injected:
        assert time.monotonic() < deadline, f"fault still {'off' if injected else 'on'}"
        await asyncio.sleep(0.1)
