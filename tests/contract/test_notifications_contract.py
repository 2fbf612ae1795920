"""NotificationsService against the real `python -m notifications` and a real NATS.

Events are published on JetStream the way orders publishes them
(`mesh.events.publish_event`); the service must turn each event into exactly
one notification, page through them, stream new ones, and survive NATS
being absent at start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from localmode.processes import Stack, free_port
from localmode.topology import LocalService
from mesh.events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDERS_STREAM,
    ensure_stream,
    publish_event,
)
from shop.common.v1.common_pb2 import Money
from shop.events.v1 import events_pb2
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from tests.contract.grpc_checks import NO_TRACING, assert_invalid_field, assert_serving

if TYPE_CHECKING:
    from shop.notifications.v1.notifications_pb2_grpc import (
        NotificationsServiceAsyncStub as Stub,
    )

StartStack = Callable[..., dict[str, LocalService]]
SERVICE = "shop.notifications.v1.NotificationsService"
WAIT_S = 15.0


@dataclass
class Mesh:
    service: LocalService
    stub: Stub
    js: JetStreamContext


async def connect_nats(port: int) -> NatsClient:
    return await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=5)


@pytest.fixture
async def mesh(start_stack: StartStack) -> AsyncIterator[Mesh]:
    services = start_stack(["nats", "notifications"], env={"notifications": NO_TRACING})
    service = services["notifications"]
    assert service.grpc_target is not None
    client = await connect_nats(services["nats"].ports[4222])
    try:
        js = client.jetstream()
        await ensure_stream(js)
        async with grpc.aio.insecure_channel(service.grpc_target) as channel:
            yield Mesh(service, notifications_pb2_grpc.NotificationsServiceStub(channel), js)
    finally:
        await client.close()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def publish_confirmed(
    js: JetStreamContext, customer: str, event_id: str | None = None, msg_id: str | None = None
) -> events_pb2.OrderConfirmed:
    event = events_pb2.OrderConfirmed(
        event_id=event_id or new_id("evt"),
        order_id=new_id("ord"),
        customer_id=customer,
        email=f"{customer}@example.com",
        total=Money(currency_code="EUR", amount_minor=4950),
        payment_id=new_id("pay"),
    )
    await publish_event(js, ORDER_CONFIRMED, msg_id or event.event_id, event.SerializeToString())
    return event


async def list_all(stub: Stub, customer: str) -> list[notifications_pb2.Notification]:
    reply = await stub.ListNotifications(
        notifications_pb2.ListNotificationsRequest(customer_id=customer, page_size=100),
        timeout=5,
    )
    return list(reply.notifications)


async def wait_for_event(
    stub: Stub, customer: str, event_id: str
) -> notifications_pb2.Notification:
    """Polls (bounded) until the notification of `event_id` is listed."""
    deadline = time.monotonic() + WAIT_S
    while True:
        for notification in await list_all(stub, customer):
            if notification.source_event_id == event_id:
                return notification
        if time.monotonic() > deadline:
            raise AssertionError(f"no notification for {event_id} within {WAIT_S}s")
        await asyncio.sleep(0.1)


async def test_an_order_event_becomes_a_notification(mesh: Mesh) -> None:
    event = await publish_confirmed(mesh.js, "cus_ada")
    got = await wait_for_event(mesh.stub, "cus_ada", event.event_id)
    assert got.kind == notifications_pb2.NOTIFICATION_KIND_ORDER_CONFIRMED
    assert got.order_id == event.order_id
    assert got.email == "cus_ada@example.com"
    assert event.order_id in got.subject
    assert "49.50 EUR" in got.body
    assert got.id
    assert got.create_time.seconds > 0


async def test_a_cancelled_order_becomes_a_notification_with_its_reason(mesh: Mesh) -> None:
    event = events_pb2.OrderCancelled(
        event_id=new_id("evt"),
        order_id=new_id("ord"),
        customer_id="cus_bob",
        email="bob@example.com",
        reason="payment declined",
    )
    await publish_event(mesh.js, ORDER_CANCELLED, event.event_id, event.SerializeToString())
    got = await wait_for_event(mesh.stub, "cus_bob", event.event_id)
    assert got.kind == notifications_pb2.NOTIFICATION_KIND_ORDER_CANCELLED
    assert "payment declined" in got.body


async def test_an_event_delivered_twice_makes_one_notification(mesh: Mesh) -> None:
    # Two stream messages (different Nats-Msg-Id, so JetStream keeps both)
    # carrying the same event: only the consumer's dedupe can stop a copy.
    event_id = new_id("evt")
    await publish_confirmed(mesh.js, "cus_dup", event_id=event_id, msg_id=event_id + "-a")
    await publish_confirmed(mesh.js, "cus_dup", event_id=event_id, msg_id=event_id + "-b")
    # Events are processed in stream order: once the marker is listed, both
    # copies were handled.
    marker = await publish_confirmed(mesh.js, "cus_dup")
    await wait_for_event(mesh.stub, "cus_dup", marker.event_id)
    sources = [n.source_event_id for n in await list_all(mesh.stub, "cus_dup")]
    assert sorted(sources) == sorted([event_id, marker.event_id])
    info = await mesh.js.consumer_info(ORDERS_STREAM.name, "notifications")
    assert info.num_ack_pending == 0  # the copy was acked, not failed and left to retry


async def test_an_undecodable_message_is_dropped_not_retried(mesh: Mesh) -> None:
    await publish_event(mesh.js, ORDER_CONFIRMED, new_id("junk"), b"\xff\xff\xff")
    marker = await publish_confirmed(mesh.js, "cus_junk")
    await wait_for_event(mesh.stub, "cus_junk", marker.event_id)
    info = await mesh.js.consumer_info(ORDERS_STREAM.name, "notifications")
    assert info.num_ack_pending == 0  # the junk was terminated, not left to redeliver
    assert info.num_redelivered == 0


async def test_pages_of_two_until_exhausted(mesh: Mesh) -> None:
    events = [await publish_confirmed(mesh.js, "cus_pages") for _ in range(5)]
    await publish_confirmed(mesh.js, "cus_other")
    await wait_for_event(mesh.stub, "cus_pages", events[-1].event_id)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        reply = await mesh.stub.ListNotifications(
            notifications_pb2.ListNotificationsRequest(
                customer_id="cus_pages", page_size=2, page_token=token
            ),
            timeout=5,
        )
        assert len(reply.notifications) <= 2
        seen += [n.source_event_id for n in reply.notifications]
        token = reply.next_page_token
        if not token:
            break
    assert seen == [e.event_id for e in reversed(events)]  # newest first, no repeat


def _tamper(token: str) -> str:
    flipped = "A" if token[3] != "A" else "B"
    return token[:3] + flipped + token[4:]


async def test_invalid_arguments_name_the_field(mesh: Mesh) -> None:
    for _ in range(3):
        last = await publish_confirmed(mesh.js, "cus_tok")
    await wait_for_event(mesh.stub, "cus_tok", last.event_id)
    first = await mesh.stub.ListNotifications(
        notifications_pb2.ListNotificationsRequest(customer_id="cus_tok", page_size=1), timeout=5
    )
    token = first.next_page_token
    assert token
    cases = [
        (notifications_pb2.ListNotificationsRequest(customer_id=""), "customer_id"),
        (notifications_pb2.ListNotificationsRequest(customer_id="c", page_size=101), "page_size"),
        (notifications_pb2.ListNotificationsRequest(customer_id="c", page_size=-1), "page_size"),
        (
            notifications_pb2.ListNotificationsRequest(customer_id="cus_tok", page_token="%%%"),
            "page_token",
        ),
        (
            notifications_pb2.ListNotificationsRequest(
                customer_id="cus_tok", page_token=_tamper(token)
            ),
            "page_token",
        ),
        (
            notifications_pb2.ListNotificationsRequest(customer_id="cus_eve", page_token=token),
            "page_token",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await mesh.stub.ListNotifications(request, timeout=5)
        assert_invalid_field(error.value, field)


async def test_stream_delivers_only_new_notifications_of_its_customer(mesh: Mesh) -> None:
    before = await publish_confirmed(mesh.js, "cus_live")
    await wait_for_event(mesh.stub, "cus_live", before.event_id)
    call = mesh.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id="cus_live"), timeout=30
    )
    try:
        await asyncio.wait_for(call.initial_metadata(), WAIT_S)  # subscribed
        await publish_confirmed(mesh.js, "cus_someone_else")
        mine = await publish_confirmed(mesh.js, "cus_live")
        reply = await asyncio.wait_for(call.read(), WAIT_S)
        assert isinstance(reply, notifications_pb2.StreamNotificationsResponse)
        assert reply.notification.source_event_id == mine.event_id  # not `before`, not theirs
        assert reply.notification.customer_id == "cus_live"
    finally:
        call.cancel()


def acting_for(customer: str) -> tuple[tuple[str, str], ...]:
    """The metadata the gateway adds for a caller it authenticated as `customer`."""
    return (("x-shop-subject", customer),)


async def test_a_subject_lists_only_its_own_notifications(mesh: Mesh) -> None:
    ada, bob = new_id("cus_ada"), new_id("cus_bob")
    mine = await publish_confirmed(mesh.js, ada)
    await publish_confirmed(mesh.js, bob)
    await wait_for_event(mesh.stub, ada, mine.event_id)

    reply = await mesh.stub.ListNotifications(
        notifications_pb2.ListNotificationsRequest(customer_id=ada),
        metadata=acting_for(ada),
        timeout=5,
    )
    assert [n.source_event_id for n in reply.notifications] == [mine.event_id]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await mesh.stub.ListNotifications(
            notifications_pb2.ListNotificationsRequest(customer_id=bob),
            metadata=acting_for(ada),
            timeout=5,
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == f"customer_id: the caller acts for {ada!r}, not {bob!r}"
    with pytest.raises(grpc.aio.AioRpcError) as invalid:  # malformed still wins
        await mesh.stub.ListNotifications(
            notifications_pb2.ListNotificationsRequest(customer_id=bob, page_size=101),
            metadata=acting_for(ada),
            timeout=5,
        )
    assert_invalid_field(invalid.value, "page_size")


@pytest.mark.parametrize("customer", ["cus_someone_else", ""], ids=["another", "everyone"])
async def test_a_subject_may_not_stream_another_customers_notifications(
    mesh: Mesh, customer: str
) -> None:
    call = mesh.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id=customer),
        metadata=acting_for("cus_a"),
        timeout=WAIT_S,
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), WAIT_S)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (error.value.details() or "").startswith("customer_id: the caller acts for 'cus_a'")


async def test_a_subject_streams_its_own_notifications(mesh: Mesh) -> None:
    ada = new_id("cus_ada")
    call = mesh.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id=ada),
        metadata=acting_for(ada),
        timeout=30,
    )
    try:
        await asyncio.wait_for(call.initial_metadata(), WAIT_S)  # subscribed
        mine = await publish_confirmed(mesh.js, ada)
        reply = await asyncio.wait_for(call.read(), WAIT_S)
        assert isinstance(reply, notifications_pb2.StreamNotificationsResponse)
        assert reply.notification.source_event_id == mine.event_id
    finally:
        call.cancel()


async def test_health_is_serving(mesh: Mesh) -> None:
    assert mesh.service.grpc_target is not None
    await assert_serving(mesh.service.grpc_target, SERVICE)


async def test_sigterm_ends_open_streams_with_unavailable_and_exits(mesh: Mesh) -> None:
    stack = Stack(mesh.service.run_dir)
    pid = stack.pid("notifications")
    assert pid is not None
    call = mesh.stub.StreamNotifications(notifications_pb2.StreamNotificationsRequest())
    await asyncio.wait_for(call.initial_metadata(), WAIT_S)
    os.kill(pid, signal.SIGTERM)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), WAIT_S)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details() == "server shutting down"
    for _ in range(int(WAIT_S / 0.05)):  # bounded wait for the exit
        if not stack.alive("notifications"):
            break
        await asyncio.sleep(0.05)
    assert not stack.alive("notifications")


async def test_serves_without_nats_and_consumes_once_it_appears(start_stack: StartStack) -> None:
    nats_port = free_port()  # nothing listens here yet
    service = start_stack(
        ["notifications"],
        env={"notifications": {**NO_TRACING, "NATS_URL": f"nats://127.0.0.1:{nats_port}"}},
    )["notifications"]
    assert service.grpc_target is not None
    await assert_serving(service.grpc_target, SERVICE)
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        stub = notifications_pb2_grpc.NotificationsServiceStub(channel)
        assert await list_all(stub, "cus_late") == []
        start_stack(["nats"], env={"nats": {"NATS_LISTEN": f"127.0.0.1:{nats_port}"}})
        client = await connect_nats(nats_port)
        try:
            js = client.jetstream()
            await ensure_stream(js)
            event = await publish_confirmed(js, "cus_late")
            await wait_for_event(stub, "cus_late", event.event_id)
        finally:
            await client.close()
