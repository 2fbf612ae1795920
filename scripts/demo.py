"""The shop's story against the running mesh, each step in its own trace.

Run by `make demo` after `make up`: a shopper browses and searches the
catalog, places two orders that go through, one with a declined card (the
saga compensates), one for more espresso machines than there are (out of
stock), and retries one PlaceOrder with the same idempotency key (the same
order comes back, nothing runs twice). Each outcome is printed with its
trace id, the Jaeger query-API URL and the command that prints its tree;
then the shopper's notifications, and the tree of the first checkout, which
spans orders, catalog, inventory, payments and notifications.

(Local mode's Jaeger, built from its Go module, has no web UI assets; with
the container image the same traces are at /trace/<id>.)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from opentelemetry import trace

from localmode.topology import Topology
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from tracing.interceptors import client_interceptors
from tracing.jaeger import JaegerError, wait_for_trace
from tracing.provider import TracingHandle, configure_tracing
from tracing.tree import format_tree

FIVE_SERVICES = ("orders", "catalog", "inventory", "payments", "notifications")
CHARGED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"


@dataclass(frozen=True)
class Addresses:
    catalog: str
    orders: str
    notifications: str
    otlp: str
    jaeger: str

    @classmethod
    def local(cls) -> Addresses:
        ports = Topology.load().default_ports()
        return cls(
            catalog=f"127.0.0.1:{ports[('catalog', 50051)]}",
            orders=f"127.0.0.1:{ports[('orders', 50052)]}",
            notifications=f"127.0.0.1:{ports[('notifications', 50055)]}",
            otlp=f"http://127.0.0.1:{ports[('jaeger', 4317)]}",
            jaeger=f"http://localhost:{ports[('jaeger', 16686)]}",
        )


@dataclass(frozen=True)
class Step:
    label: str
    outcome: str
    trace_id: str


def _order_request(
    key: str, customer: str, lines: list[tuple[str, int]], card: str
) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        idempotency_key=key,
        customer_id=customer,
        email=f"{customer}@example.com",
        lines=[orders_pb2.OrderLine(product_id=p, quantity=q) for p, q in lines],
        card=orders_pb2.PaymentCard(
            number=card,
            expiry_month=12,
            expiry_year=datetime.now(UTC).year + 2,
            cvc="123",
            holder_name="Ada Lovelace",
        ),
    )


def _order_outcome(order: orders_pb2.Order) -> str:
    status = orders_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")
    total = f"{order.total.amount_minor / 100:.2f} {order.total.currency_code}"
    reason = f" ({order.cancel_reason})" if order.cancel_reason else ""
    return f"{status} {order.id}, {total}{reason}"


async def run_story(
    addresses: Addresses, telemetry: TracingHandle, out: Callable[[str], None] = print
) -> int:
    """Plays the story; returns 0 when every step ended as scripted."""
    tracer = trace.get_tracer("demo", tracer_provider=telemetry.provider)
    run = secrets.token_hex(3)  # fresh keys and customer, so the demo can run again
    customer = f"cus-demo-{run}"
    steps: list[Step] = []
    expected_ok = True
    interceptors = client_interceptors(telemetry.provider)
    async with (
        grpc.aio.insecure_channel(addresses.catalog, interceptors=interceptors) as catalog_ch,
        grpc.aio.insecure_channel(addresses.orders, interceptors=interceptors) as orders_ch,
    ):
        catalog = catalog_pb2_grpc.CatalogServiceStub(catalog_ch)
        orders = orders_pb2_grpc.OrdersServiceStub(orders_ch)

        async def step(label: str, call: Callable[[], Awaitable[str]]) -> None:
            with tracer.start_as_current_span(f"demo {label}") as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                try:
                    outcome = await call()
                except grpc.aio.AioRpcError as error:
                    outcome = f"{error.code().name}: {error.details()}"
            steps.append(Step(label, outcome, trace_id))
            out(f"{label:<24} {outcome}")
            out(f"{'':<24} trace {trace_id}: {addresses.jaeger}/api/v3/traces/{trace_id}")
            out(f"{'':<24} as a tree: make trace ID={trace_id}")

        async def browse() -> str:
            request = catalog_pb2.ListProductsRequest(page_size=3)
            page = await catalog.ListProducts(request, timeout=5)
            return "OK: " + ", ".join(p.id for p in page.products)

        async def search() -> str:
            found = await catalog.SearchProducts(
                catalog_pb2.SearchProductsRequest(query="espresso", page_size=3), timeout=5
            )
            return "OK: " + ", ".join(p.id for p in found.products)

        placed: dict[str, orders_pb2.Order] = {}

        def place(
            name: str, lines: list[tuple[str, int]], card: str, key: str | None = None
        ) -> Callable[[], Awaitable[str]]:
            async def call() -> str:
                request = _order_request(key or f"demo-{run}-{name}", customer, lines, card)
                response = await orders.PlaceOrder(request, timeout=30)
                placed[name] = response.order
                return _order_outcome(response.order)

            return call

        await step("Browse", browse)
        await step("Search 'espresso'", search)
        await step("Order: a Chemex", place("chemex", [("prod-chemex", 1)], CHARGED_CARD))
        await step(
            "Order: teapot + grinder",
            place(
                "teapot",
                [("prod-teapot-cast-iron", 1), ("prod-grinder-hand", 1)],
                CHARGED_CARD,
            ),
        )
        await step("Order: declined card", place("declined", [("prod-chemex", 1)], DECLINED_CARD))
        await step(
            "Order: out of stock",
            place("short", [("prod-espresso-machine", 50)], CHARGED_CARD),
        )
        await step(
            "Retry: same key",
            place("retry", [("prod-chemex", 1)], CHARGED_CARD, key=f"demo-{run}-chemex"),
        )
        scripted = {
            "chemex": orders_pb2.ORDER_STATUS_CONFIRMED,
            "teapot": orders_pb2.ORDER_STATUS_CONFIRMED,
            "declined": orders_pb2.ORDER_STATUS_CANCELLED,
            "short": orders_pb2.ORDER_STATUS_CANCELLED,
        }
        for name, status in scripted.items():
            if name not in placed or placed[name].status != status:
                out(f"unexpected outcome for {name!r}")
                expected_ok = False
        retried, first_order = placed.get("retry"), placed.get("chemex")
        if retried is None or first_order is None or retried.id != first_order.id:
            out("the retried PlaceOrder did not return the first order")
            expected_ok = False

    async with grpc.aio.insecure_channel(addresses.notifications) as channel:
        stub = notifications_pb2_grpc.NotificationsServiceStub(channel)
        notes: list[notifications_pb2.Notification] = []
        for _ in range(50):  # events travel through NATS: give them a moment
            reply = await stub.ListNotifications(
                notifications_pb2.ListNotificationsRequest(customer_id=customer), timeout=5
            )
            notes = list(reply.notifications)
            if len(notes) >= len(scripted):
                break
            await asyncio.sleep(0.2)
    out(f"\nNotifications for {customer} ({len(notes)}):")
    for note in reversed(notes):
        out(f"  {note.subject}")
    if len(notes) != len(scripted):
        out(f"expected {len(scripted)} notifications")
        expected_ok = False

    first = next(s for s in steps if s.label == "Order: a Chemex")
    telemetry.force_flush()  # the demo's own spans are the roots of its traces
    try:
        whole = wait_for_trace(
            first.trace_id,
            timeout_s=20,
            predicate=lambda t: set(FIVE_SERVICES) <= t.services(),
            base_url=addresses.jaeger,
        )
    except (TimeoutError, JaegerError) as error:
        out(f"could not fetch the checkout's trace from Jaeger: {error}")
        return 1
    out(f"\nOne checkout across five services and NATS (make trace ID={first.trace_id}):")
    out(format_tree(whole))
    return 0 if expected_ok else 1


async def main() -> int:
    addresses = Addresses.local()
    os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", addresses.otlp)
    os.environ.setdefault("OTEL_EXPORTER_OTLP_INSECURE", "true")
    telemetry = configure_tracing("demo-client", "0.1.0")
    try:
        return await run_story(addresses, telemetry)
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
