"""The whole checkout mesh as real processes, and what the checkout tests check it with.

`checkout_mesh` starts NATS, catalog, inventory, payments, orders and
notifications on free ports (no Jaeger: tracing is off), opens one client
channel per service, and can kill, stop and restart any of them. Processes
it restarts itself are stopped when it exits; the `start_stack` fixture
stops the rest. Orders' and notifications' SQLite files are read read-only,
the way an operator would look at them, never written.

`EDGES` is the one table of a checkout's parent -> child edges between the
services behind the gateway (opentelemetry-demo's way of testing traces:
edges, not span counts); `assert_checkout_edges` checks a trace against it,
for the trace tests with and without the gateway in front.

Every wait here is a bounded poll: a test fails with a message naming what
did not happen, instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from localmode.processes import Stack
from localmode.topology import LocalService
from mesh.events import ORDER_CONFIRMED
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.contract.grpc_checks import NO_TRACING
from tests.mesh_clients import channel as mesh_channel
from tests.mesh_clients import inspecting_policy
from tracing.jaeger import Span, Trace

if TYPE_CHECKING:
    from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub
    from shop.notifications.v1.notifications_pb2_grpc import NotificationsServiceAsyncStub
    from shop.orders.v1.orders_pb2_grpc import OrdersServiceAsyncStub
    from shop.payments.v1.payments_pb2_grpc import PaymentsServiceAsyncStub

T = TypeVar("T")
StartStack = Callable[..., dict[str, LocalService]]

MESH = ("nats", "catalog", "inventory", "payments", "orders", "notifications")
CHARGED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED
PENDING = orders_pb2.ORDER_STATUS_PENDING
CHARGED = payments_pb2.PAYMENT_STATUS_CHARGED
REFUNDED = payments_pb2.PAYMENT_STATUS_REFUNDED
DECLINED = payments_pb2.PAYMENT_STATUS_DECLINED
KIND = {
    CONFIRMED: notifications_pb2.NOTIFICATION_KIND_ORDER_CONFIRMED,
    CANCELLED: notifications_pb2.NOTIFICATION_KIND_ORDER_CANCELLED,
}
# Orders resumes stalled sagas every second instead of every five: the
# waits below stay short without changing what is resumed.
ORDERS_ENV = {"ORDERS_RESUME_INTERVAL_SECONDS": "1"}
# The test's channels retry a restarted server within 0.1-1 s, not gRPC's
# default 1-120 s backoff, so a restart is not hidden behind a long backoff.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float, every_s: float = 0.1
) -> T:
    """Polls `probe` until it returns something other than None; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
        await asyncio.sleep(every_s)


def read_db(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a service's SQLite file, opened read-only (the service keeps writing)."""
    uri = f"file:{path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
        return db.execute(sql, params).fetchall()


def order_request(
    customer: str,
    lines: Sequence[tuple[str, int]],
    card: str = CHARGED_CARD,
    key: str | None = None,
) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        idempotency_key=key or str(uuid.uuid4()),
        customer_id=customer,
        email=f"{customer}@example.com",
        lines=[orders_pb2.OrderLine(product_id=p, quantity=q) for p, q in lines],
        card=orders_pb2.PaymentCard(
            number=card,
            expiry_month=12,
            expiry_year=datetime.now(UTC).year + 1,
            cvc="123",
            holder_name="Fault Tester",
        ),
    )


def new_customer(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Stock:
    available: int
    reserved: int


@dataclass
class CheckoutMesh:
    services: dict[str, LocalService]
    stack: Stack  # the run folder of `services`: kills and restarts are recorded there
    orders: OrdersServiceAsyncStub
    inventory: InventoryServiceAsyncStub
    payments: PaymentsServiceAsyncStub
    notifications: NotificationsServiceAsyncStub
    restarted: list[str] = field(default_factory=list)

    @property
    def orders_db(self) -> Path:
        return Path(self.services["orders"].environment["ORDERS_DB_PATH"])

    @property
    def notifications_db(self) -> Path:
        return Path(self.services["notifications"].environment["NOTIFICATIONS_DB_PATH"])

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.services['nats'].ports[4222]}"

    def pid(self, name: str) -> int:
        pid = self.stack.pid(name)
        assert pid is not None, f"{name} is not running"
        return pid

    async def kill(self, name: str) -> None:
        """SIGKILL: no drain, no shutdown hook, no last write; returns once it is gone."""
        os.kill(self.pid(name), signal.SIGKILL)
        for _ in range(200):  # bounded: 10 s
            if not self.stack.alive(name):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{name} still runs 10s after SIGKILL")
        # Dead: forget its PID file, and reap it if this mesh started it.
        assert await asyncio.to_thread(self.stack.stop, [name]) == []

    async def stop(self, name: str) -> None:
        """SIGTERM through the Stack (SIGKILL after 15 s), by the recorded PID."""
        stopped = await asyncio.to_thread(self.stack.stop, [name])
        assert stopped == [name], f"{name} was not running"

    async def restart(
        self, name: str, env: Mapping[str, str] | None = None, drop: Sequence[str] = ()
    ) -> None:
        """Starts `name` again (same ports, same data); `env` adds, `drop` removes variables.

        In a thread, so clients on this event loop keep running meanwhile."""
        assert not self.stack.alive(name), f"{name} still runs"
        service = self.services[name]
        environment = {k: v for k, v in service.environment.items() if k not in drop}
        service = dataclasses.replace(service, environment={**environment, **(env or {})})
        await asyncio.to_thread(self.stack.start, service, 60.0)
        self.services[name] = service
        if name not in self.restarted:
            self.restarted.append(name)

    async def order_step(self, order_id: str) -> str | None:
        rows = await asyncio.to_thread(
            read_db, self.orders_db, "SELECT step FROM orders WHERE id = ?", (order_id,)
        )
        return None if not rows else str(rows[0][0])

    async def order_id_of(self, key: str) -> str | None:
        rows = await asyncio.to_thread(
            read_db, self.orders_db, "SELECT id FROM orders WHERE idempotency_key = ?", (key,)
        )
        return None if not rows else str(rows[0][0])

    async def outbox(self) -> dict[str, bool]:
        """Order id -> whether its event was published (JetStream acknowledged it)."""
        rows = await asyncio.to_thread(
            read_db, self.orders_db, "SELECT order_id, sent_time_us IS NOT NULL FROM outbox"
        )
        return {str(order_id): bool(sent) for order_id, sent in rows}

    async def get_order(self, order_id: str) -> orders_pb2.Order:
        reply = await self.orders.GetOrder(orders_pb2.GetOrderRequest(id=order_id), timeout=5)
        return reply.order

    async def wait_terminal(self, order_id: str, timeout_s: float) -> orders_pb2.Order:
        async def probe() -> orders_pb2.Order | None:
            try:
                order = await self.get_order(order_id)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return None  # orders is (re)starting
            return None if order.status == PENDING else order

        return await eventually(probe, f"order {order_id} CONFIRMED or CANCELLED", timeout_s)

    async def stock(self, product_ids: Sequence[str]) -> dict[str, Stock]:
        reply = await self.inventory.GetStock(
            inventory_pb2.GetStockRequest(product_ids=list(product_ids)), timeout=5
        )
        return {s.product_id: Stock(s.available, s.reserved) for s in reply.stock_levels}

    async def resolve_charge(self, order_id: str) -> payments_pb2.Payment | None:
        """The payment the order's charge made, if any (retiring the key if none was)."""
        reply = await self.payments.ResolveCharge(
            payments_pb2.ResolveChargeRequest(idempotency_key=f"{order_id}/charge"), timeout=5
        )
        return reply.payment if reply.HasField("payment") else None

    async def get_payment(self, payment_id: str) -> payments_pb2.Payment:
        reply = await self.payments.GetPayment(
            payments_pb2.GetPaymentRequest(id=payment_id), timeout=5
        )
        return reply.payment

    async def notifications_of(self, customer: str) -> list[notifications_pb2.Notification]:
        found: list[notifications_pb2.Notification] = []
        token = ""
        for _ in range(100):  # bounded: 10,000 notifications
            reply = await self.notifications.ListNotifications(
                notifications_pb2.ListNotificationsRequest(
                    customer_id=customer, page_size=100, page_token=token
                ),
                timeout=5,
            )
            found += reply.notifications
            token = reply.next_page_token
            if not token:
                return found
        raise AssertionError(f"more than 100 pages of notifications for {customer}")

    async def wait_notified(
        self, customer: str, order_ids: Sequence[str], timeout_s: float
    ) -> list[notifications_pb2.Notification]:
        """The customer's notifications once one per order in `order_ids` is listed."""

        async def probe() -> list[notifications_pb2.Notification] | None:
            listed = await self.notifications_of(customer)
            return listed if set(order_ids) <= {n.order_id for n in listed} else None

        return await eventually(
            probe, f"a notification for each of {list(order_ids)}", timeout_s, every_s=0.2
        )


# --- the checkout's trace ------------------------------------------------------


@dataclass(frozen=True)
class End:
    service: str
    kind: str
    operation: str  # a suffix: span names differ per language, the method name does not

    def matches(self, span: Span) -> bool:
        return (
            span.service == self.service
            and span.kind == self.kind
            and span.operation.endswith(self.operation)
        )


@dataclass(frozen=True)
class Edge:
    parent: End
    child: End


def _grpc_edge(service: str, method: str) -> Edge:
    return Edge(End("orders", "CLIENT", method), End(service, "SERVER", method))


PLACE_ORDER = End("orders", "SERVER", "shop.orders.v1.OrdersService/PlaceOrder")
# Orders calls each upstream, and the event it publishes is processed by
# notifications under the publish span; all of them hang under PLACE_ORDER.
EDGES = [
    _grpc_edge("catalog", "shop.catalog.v1.CatalogService/GetProduct"),
    _grpc_edge("inventory", "shop.inventory.v1.InventoryService/ReserveStock"),
    _grpc_edge("payments", "shop.payments.v1.PaymentsService/Charge"),
    _grpc_edge("inventory", "shop.inventory.v1.InventoryService/CommitStock"),
    Edge(
        End("orders", "PRODUCER", f"{ORDER_CONFIRMED} publish"),
        End("notifications", "CONSUMER", f"{ORDER_CONFIRMED} process"),
    ),
]


def has_every_child(found: Trace, edges: Sequence[Edge] = EDGES) -> bool:
    """A `wait_for_trace` predicate: each edge's child has arrived (the last to come)."""
    return all(any(edge.child.matches(s) for s in found.spans) for edge in edges)


def assert_edges(found: Trace, edges: Sequence[Edge]) -> None:
    """Each edge's child is in `found` once, under a parent its edge allows."""
    for edge in edges:
        children = [s for s in found.spans if edge.child.matches(s)]
        assert len(children) == 1, f"{edge.child}: expected one span, got {children}"
        parent = found.span(children[0].parent_span_id or "")
        assert parent is not None, f"{edge.child}: its parent is not in the trace"
        assert edge.parent.matches(parent), f"{edge}: the parent is {parent}"


def assert_checkout_edges(found: Trace) -> Span:
    """`found` is one checkout as `EDGES` says; returns orders' PlaceOrder server span."""
    assert {"orders", "catalog", "inventory", "payments", "notifications"} <= found.services()
    place = [s for s in found.spans if PLACE_ORDER.matches(s)]
    assert len(place) == 1, place
    assert_edges(found, EDGES)
    for edge in EDGES:  # every call and the publish hang under the PlaceOrder server span
        child = next(s for s in found.spans if edge.child.matches(s))
        parent = found.span(child.parent_span_id or "")
        assert parent is not None
        assert parent.parent_span_id == place[0].span_id, edge
    return place[0]


def consistency_errors(
    order: orders_pb2.Order,
    payment: payments_pb2.Payment | None,
) -> list[str]:
    """What is wrong between a terminal order and the payment its charge key made."""
    errors = []
    if order.status == CONFIRMED:
        if payment is None or payment.status != CHARGED:
            errors.append(f"{order.id} CONFIRMED but its payment is {payment}")
        elif payment.id != order.payment_id or payment.amount != order.total:
            errors.append(f"{order.id} CONFIRMED with payment {order.payment_id}, made {payment}")
    elif order.status == CANCELLED:
        if payment is not None and payment.status == CHARGED:
            errors.append(f"{order.id} CANCELLED but payment {payment.id} is still CHARGED")
    else:
        errors.append(f"{order.id} is not terminal: {orders_pb2.OrderStatus.Name(order.status)}")
    return errors


@contextlib.asynccontextmanager
async def checkout_mesh(
    start_stack: StartStack, env: Mapping[str, Mapping[str, str]] | None = None
) -> AsyncIterator[CheckoutMesh]:
    """The six services on free ports with tracing off, mTLS and the policy on;
    `env` adds variables per service. The test calls as the gateway and as
    orders (tests/mesh_clients.py)."""
    extra = env or {}
    # Every start reads the policy, a restart too: it lives as long as the mesh.
    with tempfile.TemporaryDirectory() as policy_dir:
        policy = inspecting_policy(Path(policy_dir))
        services = start_stack(
            MESH,
            env={
                name: {
                    **NO_TRACING,
                    **policy,
                    **(ORDERS_ENV if name == "orders" else {}),
                    **extra.get(name, {}),
                }
                for name in MESH
                if name != "nats"
            },
            mtls=True,
        )
        channels = {
            name: mesh_channel(services[name], options=CHANNEL_OPTIONS)
            for name in ("orders", "inventory", "payments", "notifications")
        }
        mesh = CheckoutMesh(
            services=services,
            stack=Stack(services["orders"].run_dir),
            orders=orders_pb2_grpc.OrdersServiceStub(channels["orders"]),
            inventory=inventory_pb2_grpc.InventoryServiceStub(channels["inventory"]),
            payments=payments_pb2_grpc.PaymentsServiceStub(channels["payments"]),
            notifications=notifications_pb2_grpc.NotificationsServiceStub(
                channels["notifications"]
            ),
        )
        try:
            yield mesh
        finally:
            for channel in channels.values():
                await channel.close(None)
            # What this mesh restarted is its child: stop and reap it here. The
            # fixture stops (and reaps) what it started.
            mesh.stack.stop(mesh.restarted)  # last restarted first
