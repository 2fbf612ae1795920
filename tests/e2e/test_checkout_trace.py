"""The whole mesh in local mode, with the real Jaeger and NATS: one checkout, one trace.

A successful PlaceOrder must be one trace holding spans of orders, catalog,
inventory, payments and notifications, and its parent -> child edges must be
exactly those of `checkout_support.EDGES`: orders calls each upstream, and
the event orders publishes is processed by notifications under the publish
span (test_gateway_checkout_trace.py: the same checkout through the
gateway). The business failures are checked for what they leave behind: a
declined card leaves the stock as it was, no money held and a cancellation
notification; too little stock leaves no charge. A notification also reaches
a client that holds StreamNotifications open.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider

from localmode.topology import LocalService
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.conftest import JAEGER, require_tool
from tests.e2e.checkout_support import assert_checkout_edges, has_every_child
from tests.mesh_clients import channel as mesh_channel
from tests.mesh_clients import inspecting_policy
from tracing.interceptors import client_interceptors
from tracing.jaeger import wait_for_trace
from tracing.provider import build_tracer_provider

if TYPE_CHECKING:  # the async stub classes exist only in the type stubs
    from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub
    from shop.notifications.v1.notifications_pb2_grpc import NotificationsServiceAsyncStub
    from shop.orders.v1.orders_pb2_grpc import OrdersServiceAsyncStub
    from shop.payments.v1.payments_pb2_grpc import PaymentsServiceAsyncStub

pytestmark = pytest.mark.e2e

StartStack = Callable[..., dict[str, LocalService]]
SERVICES = ["jaeger", "nats", "catalog", "inventory", "payments", "orders", "notifications"]
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200"}
CHARGED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
WAIT_S = 30.0


@pytest.fixture
def mesh(start_stack: StartStack, tmp_path: Path) -> dict[str, LocalService]:
    """The shop as deployed, mTLS and the policy on; the test calls as the gateway
    and as orders (tests/mesh_clients.py)."""
    require_tool(JAEGER)
    names = [name for name in SERVICES if name not in ("jaeger", "nats")]
    env = {**FAST_EXPORT, **inspecting_policy(tmp_path)}
    return start_stack(SERVICES, env=dict.fromkeys(names, env), mtls=True)


@pytest.fixture
def provider(mesh: dict[str, LocalService]) -> Iterator[TracerProvider]:
    otlp = f"127.0.0.1:{mesh['jaeger'].ports[4317]}"
    provider = build_tracer_provider(
        "e2e-shopper", "test", exporter=OTLPSpanExporter(endpoint=otlp, insecure=True)
    )
    yield provider
    provider.shutdown()


@dataclass
class Shop:
    orders: OrdersServiceAsyncStub
    inventory: InventoryServiceAsyncStub
    payments: PaymentsServiceAsyncStub
    notifications: NotificationsServiceAsyncStub


@pytest.fixture
async def shop(mesh: dict[str, LocalService], provider: TracerProvider) -> AsyncIterator[Shop]:
    interceptors = client_interceptors(provider)
    channels = {
        name: mesh_channel(mesh[name], interceptors=interceptors)
        for name in ("orders", "inventory", "payments", "notifications")
    }
    yield Shop(
        orders=orders_pb2_grpc.OrdersServiceStub(channels["orders"]),
        inventory=inventory_pb2_grpc.InventoryServiceStub(channels["inventory"]),
        payments=payments_pb2_grpc.PaymentsServiceStub(channels["payments"]),
        notifications=notifications_pb2_grpc.NotificationsServiceStub(channels["notifications"]),
    )
    for channel in channels.values():
        await channel.close(None)


def order_request(
    customer: str, product_id: str, quantity: int, card: str
) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        idempotency_key=str(uuid.uuid4()),
        customer_id=customer,
        email=f"{customer}@example.com",
        lines=[orders_pb2.OrderLine(product_id=product_id, quantity=quantity)],
        card=orders_pb2.PaymentCard(
            number=card,
            expiry_month=12,
            expiry_year=datetime.now(UTC).year + 1,
            cvc="123",
            holder_name="E2E Shopper",
        ),
    )


async def stock_of(shop: Shop, product_id: str) -> tuple[int, int]:
    response = await shop.inventory.GetStock(
        inventory_pb2.GetStockRequest(product_ids=[product_id])
    )
    level = response.stock_levels[0]
    return level.available, level.reserved


async def notifications_of(
    shop: Shop, customer: str, count: int
) -> list[notifications_pb2.Notification]:
    """The customer's notifications once there are `count` of them (bounded wait)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        response = await shop.notifications.ListNotifications(
            notifications_pb2.ListNotificationsRequest(customer_id=customer)
        )
        found = list(response.notifications)
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_a_checkout_is_one_trace_across_five_services_and_the_broker(
    mesh: dict[str, LocalService], provider: TracerProvider, shop: Shop
) -> None:
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("shopper checks out") as root:
        response = await shop.orders.PlaceOrder(
            order_request("cus_traced", "prod-chemex", 1, CHARGED_CARD)
        )
    assert response.order.status == orders_pb2.ORDER_STATUS_CONFIRMED, response.order
    assert provider.force_flush(10_000)
    trace_id = trace.format_trace_id(root.get_span_context().trace_id)

    base_url = f"http://127.0.0.1:{mesh['jaeger'].ports[16686]}"
    found = wait_for_trace(trace_id, timeout_s=WAIT_S, predicate=has_every_child, base_url=base_url)

    assert_checkout_edges(found)


async def test_a_declined_card_cancels_and_leaves_stock_and_money_as_they_were(
    shop: Shop,
) -> None:
    before = await stock_of(shop, "prod-chemex")
    order = (
        await shop.orders.PlaceOrder(order_request("cus_declined", "prod-chemex", 2, DECLINED_CARD))
    ).order

    assert order.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert "declined" in order.cancel_reason
    assert await stock_of(shop, "prod-chemex") == before
    payment = (
        await shop.payments.GetPayment(payments_pb2.GetPaymentRequest(id=order.payment_id))
    ).payment
    assert payment.status == payments_pb2.PAYMENT_STATUS_DECLINED
    [notification] = await notifications_of(shop, "cus_declined", 1)
    assert notification.order_id == order.id
    assert notification.kind == notifications_pb2.NOTIFICATION_KIND_ORDER_CANCELLED


async def test_too_little_stock_cancels_without_a_charge(shop: Shop) -> None:
    available, _ = await stock_of(shop, "prod-espresso-machine")
    order = (
        await shop.orders.PlaceOrder(
            order_request("cus_short", "prod-espresso-machine", available + 1, CHARGED_CARD)
        )
    ).order

    assert order.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert "stock" in order.cancel_reason
    assert order.payment_id == ""
    # Settling the order's charge key finds nothing: no money ever moved.
    settled = await shop.payments.ResolveCharge(
        payments_pb2.ResolveChargeRequest(idempotency_key=f"{order.id}/charge")
    )
    assert not settled.HasField("payment")
    assert await stock_of(shop, "prod-espresso-machine") == (available, 0)
    [notification] = await notifications_of(shop, "cus_short", 1)
    assert notification.kind == notifications_pb2.NOTIFICATION_KIND_ORDER_CANCELLED


async def test_an_open_stream_receives_the_order_notification(shop: Shop) -> None:
    stream = shop.notifications.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id="cus_streaming")
    )
    await stream.initial_metadata()  # subscribed: nothing created from now on is missed
    order = (
        await shop.orders.PlaceOrder(order_request("cus_streaming", "prod-chemex", 1, CHARGED_CARD))
    ).order
    received = await asyncio.wait_for(stream.read(), WAIT_S)
    stream.cancel()

    assert isinstance(received, notifications_pb2.StreamNotificationsResponse)
    assert received.notification.order_id == order.id
    assert received.notification.kind == notifications_pb2.NOTIFICATION_KIND_ORDER_CONFIRMED
