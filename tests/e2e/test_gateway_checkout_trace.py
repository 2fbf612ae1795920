"""A checkout through the gateway is one trace, rooted at the gateway, with the real Jaeger.

The whole mesh with the gateway in front, on free ports: a PlaceOrder sent
to the gateway with a valid token and no trace context is one trace whose
root is the gateway's server span, then its client span, then the same
checkout tree as without the gateway (`checkout_support.EDGES`). A client
that sends a W3C `traceparent` gets the gateway's span in its own trace,
under its own span.

The trace of a call without trace context is found the way a user finds it
in Jaeger: by service, span name and start time (this Jaeger holds only
this test's traces).

What the gateway refuses (no token: UNAUTHENTICATED; inventory and payments:
UNIMPLEMENTED) is covered by tests/contract/test_gateway_contract.py, with
the default routes file.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
import pytest

from gateway.auth import mint_token
from gateway.config import AuthConfig
from localmode.topology import LocalService
from mesh.config import Env
from shop.orders.v1 import orders_pb2_grpc
from tests.conftest import JAEGER, require_tool
from tests.e2e.checkout_support import (
    CONFIRMED,
    EDGES,
    Edge,
    End,
    assert_checkout_edges,
    assert_edges,
    has_every_child,
    new_customer,
    order_request,
)
from tracing.jaeger import Trace, find_traces, wait_for_trace

if TYPE_CHECKING:  # the async stub class exists only in the type stubs
    from shop.orders.v1.orders_pb2_grpc import OrdersServiceAsyncStub

pytestmark = pytest.mark.e2e

StartStack = Callable[..., dict[str, LocalService]]
SERVICES = [
    "jaeger", "nats", "catalog", "inventory", "payments", "orders", "notifications", "gateway"
]  # fmt: skip
SIX = {"gateway", "orders", "catalog", "inventory", "payments", "notifications"}
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200"}
WAIT_S = 30.0

PLACE_ORDER_METHOD = "/shop.orders.v1.OrdersService/PlaceOrder"
GATEWAY_SERVER = End("gateway", "SERVER", PLACE_ORDER_METHOD)
GATEWAY_CLIENT = End("gateway", "CLIENT", PLACE_ORDER_METHOD)
# In front of the checkout: the gateway's server span, the client span of
# its forwarded call, then orders' PlaceOrder server span.
GATEWAY_EDGES = [
    Edge(GATEWAY_SERVER, GATEWAY_CLIENT),
    Edge(GATEWAY_CLIENT, End("orders", "SERVER", PLACE_ORDER_METHOD)),
]


@pytest.fixture
def mesh(start_stack: StartStack) -> dict[str, LocalService]:
    """The shop as deployed: mTLS and the policy on behind the plaintext gateway."""
    require_tool(JAEGER)
    names = [name for name in SERVICES if name not in ("jaeger", "nats")]
    return start_stack(SERVICES, env=dict.fromkeys(names, FAST_EXPORT), mtls=True)


@pytest.fixture
async def orders(mesh: dict[str, LocalService]) -> AsyncIterator[OrdersServiceAsyncStub]:
    """Orders through the gateway, from a client with no tracing at all."""
    async with grpc.aio.insecure_channel(str(mesh["gateway"].grpc_target)) as channel:
        yield orders_pb2_grpc.OrdersServiceStub(channel)


def bearer(mesh: dict[str, LocalService], customer: str) -> tuple[tuple[str, str], ...]:
    """A token for `customer`, signed with the keys the gateway process reads."""
    auth = AuthConfig.from_env(Env({**os.environ, **mesh["gateway"].environment}))
    return (("authorization", f"Bearer {mint_token(auth, customer, 600)}"),)


def jaeger_url(mesh: dict[str, LocalService]) -> str:
    return f"http://127.0.0.1:{mesh['jaeger'].ports[16686]}"


def find_one_trace(
    service: str, operation: str, start_min_ns: int, start_max_ns: int, base_url: str
) -> Trace:
    """The one trace with such a span, once Jaeger has it (bounded wait)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        traces = find_traces(
            service,
            operation=operation,
            start_min_ns=start_min_ns,
            start_max_ns=start_max_ns,
            base_url=base_url,
        )
        if traces or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(traces) == 1, f"{service} {operation}: {len(traces)} traces in Jaeger"
    return traces[0]


def whole(found: Trace) -> bool:
    return has_every_child(found, [*GATEWAY_EDGES, *EDGES])


def assert_rooted_at_the_gateway(found: Trace) -> None:
    assert found.services() >= SIX, found.services()
    assert_edges(found, GATEWAY_EDGES)
    place = assert_checkout_edges(found)
    [root] = found.roots()
    assert GATEWAY_SERVER.matches(root), f"the root is {root}"
    client = found.span(place.parent_span_id or "")
    assert client is not None
    assert client.parent_span_id == root.span_id


async def test_a_checkout_through_the_gateway_is_one_trace_rooted_at_the_gateway(
    mesh: dict[str, LocalService], orders: OrdersServiceAsyncStub
) -> None:
    customer = new_customer("cus-gw-trace")
    started = time.time_ns()
    reply = await orders.PlaceOrder(
        order_request(customer, [("prod-chemex", 1)]), metadata=bearer(mesh, customer), timeout=30
    )
    placed = time.time_ns()
    assert reply.order.status == CONFIRMED, reply.order

    base_url = jaeger_url(mesh)
    gateway_trace = find_one_trace("gateway", PLACE_ORDER_METHOD, started, placed, base_url)
    found = wait_for_trace(
        gateway_trace.trace_id, timeout_s=WAIT_S, predicate=whole, base_url=base_url
    )

    assert_rooted_at_the_gateway(found)
    [root] = found.roots()
    assert root.parent_span_id is None, "no trace context came in: the gateway starts the trace"
    assert root.attributes.get("enduser.id") == customer
    # One trace: no span of any service in that time went to another one.
    for service in sorted(SIX):
        traces = find_traces(
            service, start_min_ns=started, start_max_ns=time.time_ns(), base_url=base_url
        )
        assert [t.trace_id for t in traces] == [found.trace_id], service


async def test_the_gateway_continues_a_trace_the_client_started(
    mesh: dict[str, LocalService], orders: OrdersServiceAsyncStub
) -> None:
    customer = new_customer("cus-gw-parent")
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    metadata = (("traceparent", f"00-{trace_id}-{parent_id}-01"), *bearer(mesh, customer))
    reply = await orders.PlaceOrder(
        order_request(customer, [("prod-chemex", 1)]), metadata=metadata, timeout=30
    )
    assert reply.order.status == CONFIRMED, reply.order

    found = wait_for_trace(trace_id, timeout_s=WAIT_S, predicate=whole, base_url=jaeger_url(mesh))

    assert_rooted_at_the_gateway(found)  # the client's span is not in Jaeger: it sent none
    [root] = found.roots()
    assert root.parent_span_id == parent_id, "the gateway's span hangs under the client's"
