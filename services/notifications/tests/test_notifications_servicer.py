"""NotificationsService over a real in-process gRPC server on port 0.

The server is the one `python -m notifications` runs (`create_server`), with
health, reflection and the mesh's interceptors; its consumer is not started,
so notifications are recorded through the domain as the consumer would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from mesh.identity import SUBJECT_HEADER
from mesh.interceptors import FaultConfig
from mesh.server import ServerConfig, start
from notifications.config import NotificationsConfig
from notifications.domain import Kind, Notification
from notifications.server import NotificationsServer, create_server
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from tracing.interceptors import server_interceptors

WAIT = 10.0


@dataclass
class Running:
    server: NotificationsServer
    stub: notifications_pb2_grpc.NotificationsServiceAsyncStub


def note(n: int, customer: str = "cus_1") -> Notification:
    return Notification(
        id=f"ntf_{n:03d}",
        customer_id=customer,
        email="a@example.com",
        order_id=f"ord_{n}",
        kind=Kind.ORDER_CONFIRMED,
        subject=f"Your order ord_{n} is confirmed",
        body="Thanks",
        source_event_id=f"evt_{customer}_{n}",
        create_time=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC),
    )


@pytest.fixture(params=["plain", "traced"])
async def running(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    config = NotificationsConfig(
        server=ServerConfig(
            listen_addr="127.0.0.1:0", grace_s=0.0, drain_s=0.0, faults=FaultConfig()
        ),
        db_path=str(tmp_path / "notifications.db"),
        nats_url="nats://127.0.0.1:1",
        ack_wait_s=30.0,
        page_token_key=b"k" * 32,
        log_level="INFO",
    )
    # "traced": with OpenTelemetry's server interceptor in front, as in the
    # service, which must pass streaming calls and their aborts through.
    provider = TracerProvider() if request.param == "traced" else None
    interceptors = server_interceptors(provider) if provider is not None else []
    server = await create_server(config, interceptors)
    try:
        await start(server.mesh)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.mesh.port}") as channel:
            yield Running(server, notifications_pb2_grpc.NotificationsServiceStub(channel))
    finally:
        await server.stop(config.server)
        if provider is not None:
            provider.shutdown()


async def test_list_maps_every_field(running: Running) -> None:
    await running.server.notifications.record(note(1))
    reply = await running.stub.ListNotifications(
        notifications_pb2.ListNotificationsRequest(customer_id="cus_1"), timeout=WAIT
    )
    (got,) = reply.notifications
    assert got.id == "ntf_001"
    assert got.kind == notifications_pb2.NOTIFICATION_KIND_ORDER_CONFIRMED
    assert (got.customer_id, got.email, got.order_id) == ("cus_1", "a@example.com", "ord_1")
    assert got.subject == "Your order ord_1 is confirmed"
    assert got.source_event_id == "evt_cus_1_1"
    assert got.create_time.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert not reply.next_page_token


async def test_list_pages_with_tokens(running: Running) -> None:
    for n in range(5):
        await running.server.notifications.record(note(n))
    seen: list[str] = []
    token = ""
    for _ in range(10):
        reply = await running.stub.ListNotifications(
            notifications_pb2.ListNotificationsRequest(
                customer_id="cus_1", page_size=2, page_token=token
            ),
            timeout=WAIT,
        )
        seen += [n.id for n in reply.notifications]
        token = reply.next_page_token
        if not token:
            break
    assert seen == ["ntf_004", "ntf_003", "ntf_002", "ntf_001", "ntf_000"]


async def test_list_without_customer_is_invalid(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await running.stub.ListNotifications(
            notifications_pb2.ListNotificationsRequest(page_size=1), timeout=WAIT
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("customer_id:")


async def test_stream_delivers_new_notifications_of_its_customer(running: Running) -> None:
    await running.server.notifications.record(note(0))  # before: not replayed
    call = running.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id="cus_1"), timeout=WAIT
    )
    await asyncio.wait_for(call.initial_metadata(), WAIT)  # subscribed
    await running.server.notifications.record(note(1, "cus_other"))
    await running.server.notifications.record(note(2))
    reply = await asyncio.wait_for(call.read(), WAIT)
    assert isinstance(reply, notifications_pb2.StreamNotificationsResponse)
    assert reply.notification.id == "ntf_002"
    call.cancel()


async def test_stream_rejects_an_overlong_customer_id(running: Running) -> None:
    call = running.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id="c" * 200), timeout=WAIT
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), WAIT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("customer_id:")


async def test_stream_ends_unavailable_when_the_server_shuts_down(running: Running) -> None:
    call = running.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(), timeout=WAIT
    )
    await asyncio.wait_for(call.initial_metadata(), WAIT)
    running.server.notifications.broadcaster.close()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), WAIT)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details() == "server shutting down"


async def test_list_for_another_customer_than_the_subject_is_permission_denied(
    running: Running,
) -> None:
    await running.server.notifications.record(note(1, "cus_a"))
    await running.server.notifications.record(note(2, "cus_b"))
    as_a = ((SUBJECT_HEADER, "cus_a"),)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await running.stub.ListNotifications(
            notifications_pb2.ListNotificationsRequest(customer_id="cus_b"),
            metadata=as_a,
            timeout=WAIT,
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == "customer_id: the caller acts for 'cus_a', not 'cus_b'"
    reply = await running.stub.ListNotifications(
        notifications_pb2.ListNotificationsRequest(customer_id="cus_a"),
        metadata=as_a,
        timeout=WAIT,
    )
    assert [n.id for n in reply.notifications] == ["ntf_001"]


async def test_an_empty_subject_acts_for_nobody(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await running.stub.ListNotifications(
            notifications_pb2.ListNotificationsRequest(customer_id="cus_a"),
            metadata=((SUBJECT_HEADER, ""),),
            timeout=WAIT,
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("customer", ["cus_b", ""])
async def test_stream_of_another_customer_or_of_all_is_permission_denied(
    running: Running, customer: str
) -> None:
    call = running.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id=customer),
        metadata=((SUBJECT_HEADER, "cus_a"),),
        timeout=WAIT,
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), WAIT)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (error.value.details() or "").startswith("customer_id: the caller acts for 'cus_a'")


async def test_stream_of_the_subjects_own_customer_delivers(running: Running) -> None:
    call = running.stub.StreamNotifications(
        notifications_pb2.StreamNotificationsRequest(customer_id="cus_a"),
        metadata=((SUBJECT_HEADER, "cus_a"),),
        timeout=WAIT,
    )
    await asyncio.wait_for(call.initial_metadata(), WAIT)  # subscribed
    await running.server.notifications.record(note(1, "cus_a"))
    reply = await asyncio.wait_for(call.read(), WAIT)
    assert isinstance(reply, notifications_pb2.StreamNotificationsResponse)
    assert reply.notification.customer_id == "cus_a"
    call.cancel()
