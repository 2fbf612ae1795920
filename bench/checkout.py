"""One checkout end to end: PlaceOrder latency and confirm -> notification delay.

The whole mesh runs on free ports as `make up` runs it (tracing on, a real
Jaeger and NATS). A client places `orders` orders one after another, each
one unit of a well-stocked product with a card that charges, and takes each
PlaceOrder's latency on the client. A StreamNotifications held open for the
customer timestamps each notification as it arrives; the delay is that
moment minus the order's update_time (when orders committed CONFIRMED with
its event in the outbox: same host, same clock). catalog GetProduct, timed
the same way against the same catalog in the same run, is the anchor.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc

from bench.report import header, percentile
from localmode.processes import Stack, free_port, start_all
from localmode.topology import Topology
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

SERVICES = ("jaeger", "nats", "catalog", "inventory", "payments", "orders", "notifications")
PRODUCT = "prod-aeropress"  # 185 in stock: enough for every order of a run


@dataclass
class CheckoutResult:
    place_order_s: list[float]
    confirm_to_notification_s: list[float]
    get_product_s: list[float]


def start_mesh(
    run_dir: Path,
    names: Sequence[str] = SERVICES,
    environment: Mapping[str, str] | None = None,
) -> tuple[Stack, dict[str, str]]:
    """Starts `names` (default: the whole mesh) on free ports; name -> gRPC target.

    `environment` goes on top of every service's own (OTEL_SDK_DISABLED, say).
    """
    topology = Topology.load()
    ports = {key: free_port() for key in topology.default_ports()}
    services = [topology.resolve(name, ports, run_dir) for name in names]
    if environment:
        services = [replace(s, environment={**s.environment, **environment}) for s in services]
    stack = Stack(run_dir)
    start_all(stack, services)
    return stack, {s.name: str(s.grpc_target) for s in services if s.grpc_target}


def order_request(customer: str, product: str = PRODUCT) -> orders_pb2.PlaceOrderRequest:
    """One unit of `product` (default: a well-stocked one), paid with a card that charges."""
    return orders_pb2.PlaceOrderRequest(
        idempotency_key=str(uuid.uuid4()),
        customer_id=customer,
        email=f"{customer}@example.com",
        lines=[orders_pb2.OrderLine(product_id=product, quantity=1)],
        card=orders_pb2.PaymentCard(
            number="4242424242424242",
            expiry_month=12,
            expiry_year=datetime.now(UTC).year + 1,
            cvc="123",
            holder_name="Bench",
        ),
    )


async def measure_checkout(targets: dict[str, str], orders: int) -> CheckoutResult:
    customer = f"cus-bench-{uuid.uuid4().hex[:6]}"
    arrived: dict[str, float] = {}
    async with (
        grpc.aio.insecure_channel(targets["orders"]) as orders_channel,
        grpc.aio.insecure_channel(targets["notifications"]) as notes_channel,
        grpc.aio.insecure_channel(targets["catalog"]) as catalog_channel,
    ):
        catalog = catalog_pb2_grpc.CatalogServiceStub(catalog_channel)
        get_product = catalog_pb2.GetProductRequest(id=PRODUCT)
        anchor: list[float] = []
        for _ in range(orders * 2):
            start = time.perf_counter()
            await catalog.GetProduct(get_product, timeout=5)
            anchor.append(time.perf_counter() - start)

        stream = notifications_pb2_grpc.NotificationsServiceStub(notes_channel).StreamNotifications(
            notifications_pb2.StreamNotificationsRequest(customer_id=customer)
        )
        await stream.initial_metadata()  # subscribed before the first order

        done = asyncio.Event()
        expected: set[str] = set()

        def check() -> None:
            if expected and expected <= arrived.keys():
                done.set()

        async def listen() -> None:
            async for message in stream:
                arrived[message.notification.order_id] = time.time()
                check()

        listener = asyncio.create_task(listen())
        stub = orders_pb2_grpc.OrdersServiceStub(orders_channel)
        await stub.PlaceOrder(order_request(customer), timeout=30)  # warm-up, not recorded
        latencies: list[float] = []
        confirmed: dict[str, float] = {}
        for _ in range(orders):
            start = time.perf_counter()
            response = await stub.PlaceOrder(order_request(customer), timeout=30)
            latencies.append(time.perf_counter() - start)
            order = response.order
            if order.status != orders_pb2.ORDER_STATUS_CONFIRMED:
                raise RuntimeError(f"order {order.id} was not confirmed: {order.cancel_reason}")
            confirmed[order.id] = order.update_time.ToDatetime(tzinfo=UTC).timestamp()
        expected.update(confirmed)
        check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        stream.cancel()
        listener.cancel()
        missing = confirmed.keys() - arrived.keys()
        if missing:
            raise RuntimeError(f"{len(missing)} notifications never arrived")
    delays = [arrived[order_id] - at for order_id, at in confirmed.items()]
    return CheckoutResult(latencies, delays, anchor)


def render_checkout(result: CheckoutResult, command: str) -> str:
    anchor = statistics.median(result.get_product_s)
    rows = [
        ("PlaceOrder, end to end", result.place_order_s),
        ("confirm -> notification on an open stream", result.confirm_to_notification_s),
        ("anchor: catalog GetProduct", result.get_product_s),
    ]
    lines = [
        *header("one checkout end to end (tracing on)", command),
        "Setup: the whole mesh on loopback as `make up` runs it (Jaeger, NATS, catalog,"
        " inventory, payments, orders, notifications, every span exported); orders placed one"
        f" after another, one {PRODUCT} each, card 4242. The notification delay is its arrival"
        " on a StreamNotifications held open by the client minus the order's update_time"
        " (CONFIRMED committed with its outbox row). 'x anchor' divides by catalog"
        " GetProduct's median, timed sequentially in the same run.",
        "",
        "| measure | samples | median ms | p99 ms | x anchor |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, values in rows:
        lines.append(
            f"| {label} | {len(values)} | {statistics.median(values) * 1000:.3f} "
            f"| {percentile(values, 0.99) * 1000:.3f} | {statistics.median(values) / anchor:.2f} |"
        )
    return "\n".join(lines) + "\n"
