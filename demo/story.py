"""The shop's story against the running mesh, through the gateway, each call its own trace.

Run by `make demo` after `make up`: a shopper signs in (a JWT for their
customer id, signed with the key the gateway reads: GATEWAY_JWT_KEY,
GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE, or their demo defaults), then
browses and searches the catalog, places two orders that go through, one
with a declined card (the saga compensates), one for more espresso machines
than there are (out of stock), and retries one PlaceOrder with the same
idempotency key (the same order comes back, nothing runs twice); then the
resilience act (demo/resilience.py: retries, a circuit breaker and a
deadline at work against faults injected at run time). Every call
goes to the gateway, the one public entry, as a plain client would: with a
token and without trace context, so each trace starts at the gateway's span.

Each outcome is printed as it comes; then the shopper's notifications, each
call's trace id (found in Jaeger by the gateway's span: its name, start time
and `enduser.id`, the subject of the shopper's token) with the command that
prints its tree, and the tree of the first checkout, which spans the
gateway, orders, catalog, inventory, payments and notifications.

(Local mode's Jaeger, built from its Go module, has no web UI assets; with
the container image the same traces are at /trace/<id>.)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc

from demo.resilience import resilience_act
from gateway.auth import mint_token
from gateway.config import AuthConfig
from localmode.topology import REPO_ROOT, Topology
from mesh.config import ConfigError, Env
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from tracing.jaeger import JaegerError, Trace, find_traces, wait_for_trace
from tracing.tree import format_tree

SIX_SERVICES = ("gateway", "orders", "catalog", "inventory", "payments", "notifications")
CHARGED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TOKEN_TTL_S = 3600
TRACE_WAIT_S = 30.0  # the services export in batches, every 5 s by default


@dataclass(frozen=True)
class Addresses:
    gateway: str
    jaeger: str
    faults: Path  # the fault file the services read (MESH_FAULTS_FILE)
    console: str = ""  # the mesh console's page

    @classmethod
    def local(cls) -> Addresses:
        ports = Topology.load().default_ports()
        # As compose.yaml's x-local entries read it, relative to the repository.
        faults = REPO_ROOT / os.environ.get("MESH_FAULTS_FILE", "faults/faults.yaml")
        return cls(
            gateway=f"127.0.0.1:{ports[('gateway', 8080)]}",
            jaeger=f"http://localhost:{ports[('jaeger', 16686)]}",
            faults=faults,
            console=f"http://localhost:{ports[('console', 8088)]}/",
        )


@dataclass
class Step:
    label: str
    method: str  # the gateway's span name: the full gRPC method
    subject: str  # who called: the `enduser.id` of the gateway's span
    started_ns: int
    ended_ns: int
    trace_id: str | None = field(default=None)


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


def _gateway_root(found: Trace, step: Step) -> bool:
    """Whether `found` starts at the gateway's server span of `step`'s call."""
    return any(
        span.service == "gateway"
        and span.kind == "SERVER"
        and span.parent_span_id is None
        and span.operation == step.method
        and span.attributes.get("enduser.id") == step.subject
        and step.started_ns <= span.start_unix_nano <= step.ended_ns
        for span in found.spans
    )


def find_step_traces(steps: list[Step], jaeger: str, timeout_s: float = TRACE_WAIT_S) -> None:
    """Fills in each step's trace id, polling until every one is in Jaeger or time is up.

    A step's window (its call's start and end on this machine's clock), the
    method and the caller's subject single out its trace, even with other
    clients calling the gateway meanwhile.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for step in (s for s in steps if s.trace_id is None):
            traces = find_traces(
                "gateway",
                operation=step.method,
                start_min_ns=step.started_ns,
                start_max_ns=step.ended_ns,
                base_url=jaeger,
            )
            step.trace_id = next((t.trace_id for t in traces if _gateway_root(t, step)), None)
        if all(s.trace_id for s in steps) or time.monotonic() > deadline:
            return
        time.sleep(0.5)


async def run_story(
    addresses: Addresses, auth: AuthConfig, out: Callable[[str], None] = print
) -> int:
    """Plays the story; returns 0 when every step ended as scripted."""
    run = secrets.token_hex(3)  # fresh keys and customer, so the demo can run again
    customer = f"cus-demo-{run}"
    # One token per customer the story uses (it follows one shopper); the
    # gateway passes the token's subject on, and orders and notifications
    # serve a customer's data only to that customer.
    tokens = {customer: mint_token(auth, customer, TOKEN_TTL_S)}
    signed_in = (("authorization", f"Bearer {tokens[customer]}"),)
    steps: list[Step] = []
    expected_ok = True
    out(f"Shopper {customer}, signed in with a JWT, calls the gateway at {addresses.gateway}\n")
    async with grpc.aio.insecure_channel(addresses.gateway) as channel:
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        orders = orders_pb2_grpc.OrdersServiceStub(channel)
        notifications = notifications_pb2_grpc.NotificationsServiceStub(channel)

        async def step(label: str, method: str, call: Callable[[], Awaitable[str]]) -> None:
            started = time.time_ns()
            try:
                outcome = await call()
            except grpc.aio.AioRpcError as error:
                outcome = f"{error.code().name}: {error.details()}"
            steps.append(Step(label, method, customer, started, time.time_ns()))
            out(f"{label:<24} {outcome}")

        async def browse() -> str:
            request = catalog_pb2.ListProductsRequest(page_size=3)
            page = await catalog.ListProducts(request, metadata=signed_in, timeout=5)
            return "OK: " + ", ".join(p.id for p in page.products)

        async def search() -> str:
            found = await catalog.SearchProducts(
                catalog_pb2.SearchProductsRequest(query="espresso", page_size=3),
                metadata=signed_in,
                timeout=5,
            )
            return "OK: " + ", ".join(p.id for p in found.products)

        placed: dict[str, orders_pb2.Order] = {}

        def place(
            name: str, lines: list[tuple[str, int]], card: str, key: str | None = None
        ) -> Callable[[], Awaitable[str]]:
            async def call() -> str:
                request = _order_request(key or f"demo-{run}-{name}", customer, lines, card)
                response = await orders.PlaceOrder(request, metadata=signed_in, timeout=30)
                placed[name] = response.order
                return _order_outcome(response.order)

            return call

        catalog_method = "/shop.catalog.v1.CatalogService/"
        place_order = "/shop.orders.v1.OrdersService/PlaceOrder"
        await step("Browse", catalog_method + "ListProducts", browse)
        await step("Search 'espresso'", catalog_method + "SearchProducts", search)
        await step(
            "Order: a Chemex", place_order, place("chemex", [("prod-chemex", 1)], CHARGED_CARD)
        )
        await step(
            "Order: teapot + grinder",
            place_order,
            place(
                "teapot",
                [("prod-teapot-cast-iron", 1), ("prod-grinder-hand", 1)],
                CHARGED_CARD,
            ),
        )
        await step(
            "Order: declined card",
            place_order,
            place("declined", [("prod-chemex", 1)], DECLINED_CARD),
        )
        await step(
            "Order: out of stock",
            place_order,
            place("short", [("prod-espresso-machine", 50)], CHARGED_CARD),
        )
        await step(
            "Retry: same key",
            place_order,
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

        def fresh_order(name: str) -> orders_pb2.PlaceOrderRequest:
            return _order_request(
                f"demo-{run}-{name}", customer, [("prod-chemex", 1)], CHARGED_CARD
            )

        if not await resilience_act(channel, signed_in, addresses.faults, fresh_order, step, out):
            out("the resilience act did not end as described")
            expected_ok = False

        # The story's orders' notifications (the act's slow checkout may
        # end, and be notified, at any time now).
        story_orders = {placed[name].id for name in scripted if name in placed}
        notes: list[notifications_pb2.Notification] = []
        for _ in range(50):  # events travel through NATS: give them a moment
            reply = await notifications.ListNotifications(
                notifications_pb2.ListNotificationsRequest(customer_id=customer),
                metadata=signed_in,
                timeout=5,
            )
            notes = [n for n in reply.notifications if n.order_id in story_orders]
            if len(notes) >= len(scripted):
                break
            await asyncio.sleep(0.2)
    out(f"\nNotifications for {customer} ({len(notes)}):")
    for note in reversed(notes):
        out(f"  {note.subject}")
    if len(notes) != len(scripted):
        out(f"expected {len(scripted)} notifications")
        expected_ok = False

    try:
        await asyncio.to_thread(find_step_traces, steps, addresses.jaeger)
    except JaegerError as error:
        out(f"could not search Jaeger: {error}")
        return 1
    out("\nEach call is one trace, started by the gateway:")
    for done in steps:
        if done.trace_id is None:
            out(f"{done.label:<24} no trace found in Jaeger within {TRACE_WAIT_S:.0f}s")
            expected_ok = False
            continue
        out(f"{done.label:<24} make trace ID={done.trace_id}")
        out(f"{'':<24} {addresses.jaeger}/api/v3/traces/{done.trace_id}")

    first = next(s for s in steps if s.label == "Order: a Chemex")
    if first.trace_id is None:
        return 1
    try:
        whole = await asyncio.to_thread(
            wait_for_trace,
            first.trace_id,
            timeout_s=TRACE_WAIT_S,
            predicate=lambda t: set(SIX_SERVICES) <= t.services(),
            base_url=addresses.jaeger,
        )
    except (TimeoutError, JaegerError) as error:
        out(f"could not fetch the checkout's trace from Jaeger: {error}")
        return 1
    out(f"\nOne checkout, the gateway and five services (make trace ID={first.trace_id}):")
    out(format_tree(whole))
    if addresses.console:
        out(f"\nThe live mesh, these traces as waterfalls, faults to switch: {addresses.console}")
    return 0 if expected_ok else 1


async def main() -> int:
    try:
        auth = AuthConfig.from_env(Env())  # the gateway's own reading of its variables
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    return await run_story(Addresses.local(), auth)
