"""The `calls` part: one call per service and language, and a shopper's calls via the gateway.

Direct: catalog `GetProduct` (Python), inventory `GetStock` (Go) and payments
`GetPayment` (TypeScript) each run twice at once on free ports: one exporting
every span to a real Jaeger, one with OTEL_SDK_DISABLED=true. Through the
gateway: the whole shop (`bench.shop`) runs twice, once traced into the same
Jaeger and once with tracing off everywhere, and takes catalog `GetProduct`
and a checkout (`PlaceOrder`, end to end: inventory, payments, the outbox to
NATS and notifications) through its gateway with a bench customer's JWT.
The traced copies take calls without trace context (sampled) and calls whose
traceparent says not sampled. Rounds go over every (call, mode) pair in turn
so that machine noise hits all alike; checkouts get fewer calls per round.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc

from bench.load import Call, Metadata, Prepare, Sample, get_product, interleave
from bench.report import header, percentile
from bench.shop import Shop, place_order, start_shop
from bench.stock import StockPool
from localmode.processes import Stack, free_port, start_all
from localmode.topology import LocalService, Topology
from shop.common.v1.common_pb2 import Money
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

__all__ = [
    "ANCHOR",
    "CHECKOUT",
    "MODES",
    "OFF",
    "SAMPLED",
    "UNSAMPLED",
    "UNSAMPLED_PARENT",
    "CallTargets",
    "copy_of",
    "measure",
    "render",
    "start_services",
]

SAMPLED = "tracing on, sampled"
UNSAMPLED = "tracing on, parent unsampled"
OFF = "tracing off"
MODES = (SAMPLED, UNSAMPLED, OFF)
# A caller whose trace is not sampled (W3C flags 00): the service must follow
# its decision, recording nothing and passing the context on.
UNSAMPLED_PARENT: Metadata = (("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-00"),)
ANCHOR = "catalog GetProduct (Python)"
VIA_GATEWAY = "catalog GetProduct via the gateway"
CHECKOUT = "checkout PlaceOrder via the gateway"

Key = tuple[str, str]  # (call label, mode)
# A channel and the metadata every call sends -> the call to repeat.
PrepareWith = Callable[[grpc.aio.Channel, Metadata], Awaitable[Call]]
CallTargets = dict[Key, tuple[PrepareWith, str]]


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


def checkout(shop: Shop, pool: StockPool) -> PrepareWith:
    """PlaceOrder through `shop`'s gateway, each order one unit from `pool`."""

    async def prepared(channel: grpc.aio.Channel, metadata: Metadata = ()) -> Call:
        return place_order(channel, shop, pool, metadata)

    return prepared


@dataclass(frozen=True)
class Scenario:
    label: str  # how the table names it
    service: str  # compose.yaml service
    prepare: PrepareWith


DIRECT = (
    Scenario(ANCHOR, "catalog", get_product),
    Scenario("inventory GetStock (Go)", "inventory", get_stock),
    Scenario("payments GetPayment (TypeScript)", "payments", get_payment),
)


def _sending(prepare: PrepareWith, metadata: Metadata) -> Prepare:
    async def prepared(channel: grpc.aio.Channel) -> Call:
        return await prepare(channel, metadata)

    return prepared


async def measure(
    targets: CallTargets, calls: int, rounds: int, concurrency: int, checkouts: int
) -> dict[Key, Sample]:
    """Every target's rounds; a checkout target makes `checkouts` calls per round."""
    prepared: dict[Key, tuple[Prepare, str]] = {}
    for (label, mode), (prepare, target) in targets.items():
        metadata = UNSAMPLED_PARENT if mode == UNSAMPLED else ()
        prepared[label, mode] = (_sending(prepare, metadata), target)
    counts = {key: checkouts for key in targets if key[0] == CHECKOUT}
    return await interleave(prepared, calls, rounds, concurrency, counts)


def copy_of(service: LocalService, suffix: str, environment: dict[str, str]) -> LocalService:
    """A second copy of `service` on a port and with a database of its own,
    named `<name>-<suffix>`, `environment` set on top of the original's."""
    port = free_port()
    own = service.grpc_target
    assert own is not None
    run_dir = service.run_dir.parent / f"{service.name}-{suffix}"
    env = {  # its own address and its own database
        key: value.replace(own, f"127.0.0.1:{port}").replace(str(service.run_dir), str(run_dir))
        for key, value in service.environment.items()
    }
    return replace(
        service,
        name=f"{service.name}-{suffix}",
        environment={**env, **environment},
        ready=f"grpc://127.0.0.1:{port}",
        run_dir=run_dir,
    )


def _start_direct(stack: Stack, run_dir: Path, targets: CallTargets) -> dict[tuple[str, int], int]:
    """Jaeger and each direct service twice; returns the port map (Jaeger's ports in it)."""
    topology = Topology.load()
    ports = {key: free_port() for key in topology.default_ports()}
    services = [topology.resolve("jaeger", ports, run_dir / "jaeger")]
    for scenario in DIRECT:
        traced = topology.resolve(scenario.service, ports, run_dir / scenario.service)
        # Tracing is what differs; neither copy serves metrics or a health
        # probe port (one port each, and the copy would share the original's).
        no_side_ports = {"MESH_METRICS_ADDRESS": "", "MESH_HEALTH_PROBE_ADDRESS": ""}
        traced = replace(traced, environment={**traced.environment, **no_side_ports})
        untraced = copy_of(traced, "untraced", {"OTEL_SDK_DISABLED": "true"})
        services += [traced, untraced]
        for mode, service in zip(MODES, (traced, traced, untraced), strict=True):
            assert service.grpc_target is not None
            targets[scenario.label, mode] = (scenario.prepare, service.grpc_target)
    for service in services:
        (service.run_dir / "data").mkdir(parents=True, exist_ok=True)
    start_all(stack, services)
    return ports


def start_services(run_dir: Path) -> tuple[Stack, CallTargets]:
    """The direct services, and the shop twice (traced, untraced) behind its gateway."""
    stack = Stack(run_dir)
    targets: CallTargets = {}
    try:
        ports = _start_direct(stack, run_dir, targets)
        traced = start_shop(stack, run_dir / "shop", "shop-", True, ports)
        untraced = start_shop(stack, run_dir / "shop-untraced", "shop-untraced-", False)
        for shop, modes in ((traced, (SAMPLED, UNSAMPLED)), (untraced, (OFF,))):
            # One pool per inventory: both traced modes buy from the same one.
            buy = checkout(shop, StockPool.from_inventory(shop.inventory))
            for mode in modes:
                targets[VIA_GATEWAY, mode] = (get_product, shop.gateway)
                targets[CHECKOUT, mode] = (buy, shop.gateway)
    except BaseException:
        stack.stop()
        raise
    # Rows in a stable order: by call, then mode.
    order = [s.label for s in DIRECT] + [VIA_GATEWAY, CHECKOUT]
    return stack, {
        (label, mode): targets[label, mode]
        for label in order
        for mode in MODES
        if (label, mode) in targets
    }


def render(results: dict[int, dict[Key, Sample]], command: str) -> str:
    lines = [
        *header(
            "one call per service and language, and a shopper's via the gateway;"
            " tracing sampled, unsampled and off",
            command,
        ),
        "Setup: one Python grpc.aio client process; each service runs twice on loopback: one"
        " with tracing on (spans batch-exported over OTLP gRPC to a real Jaeger), one with"
        f" OTEL_SDK_DISABLED=true ('{OFF}'). The calls 'via the gateway' go to the whole shop"
        " as `make up` runs it (NATS, catalog, inventory, payments, orders, notifications,"
        " gateway; MESH_MTLS=off, the gateway's rate limit off since one client sends"
        " everything: GATEWAY_RATE_PER_SECOND=0), started twice, traced into the same Jaeger"
        f" and with tracing off everywhere. '{CHECKOUT}' is PlaceOrder end to end with a"
        " bench customer's JWT: reserve stock, charge card 4242, confirm, the outbox to NATS"
        " and notifications; each order buys one unit of the product with the most left, so"
        " none is sold out, and every order must come back CONFIRMED. The traced copy takes"
        f" calls without trace context ('{SAMPLED}': the call starts a trace, sampled) and"
        f" calls whose traceparent says not sampled ('{UNSAMPLED}': nothing should be"
        " recorded). Rounds go over every call and mode in turn; checkouts make fewer calls"
        " per round. 'x anchor' is the median divided by"
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
            throughput = sample.calls_per_second
            lines.append(
                f"| {concurrency} | {label} | {mode} | {len(lat)} "
                f"| {statistics.median(lat) * 1000:.3f} | {percentile(lat, 0.99) * 1000:.3f} "
                f"| {throughput:,.0f} | {statistics.median(lat) / anchor:.2f} "
                f"| {throughput / off.calls_per_second:.2f} |"
            )
    return "\n".join(lines) + "\n"
