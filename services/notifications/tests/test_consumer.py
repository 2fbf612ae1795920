"""Decoding broker messages into notifications, and the consumer's ack rules,
with a stand-in for nats-py's message (no server needed for these)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.events import ORDER_CANCELLED, ORDER_CONFIRMED
from mesh.metrics import serve_metrics
from mesh.paging import PageTokens
from notifications.broadcast import Broadcaster
from notifications.consumer import OrderEventsConsumer, decode
from notifications.domain import Kind, Notifications
from notifications.errors import InvalidEvent
from notifications.store import SqliteNotificationStore
from shop.common.v1.common_pb2 import Money
from shop.events.v1 import events_pb2
from tests.metrics_scrape import scrape, values

CONFIRMED = events_pb2.OrderConfirmed(
    event_id="evt_1",
    order_id="ord_1",
    customer_id="cus_1",
    email="a@example.com",
    total=Money(currency_code="EUR", amount_minor=1200),
).SerializeToString()


@dataclass
class FakeMsg:
    """What the consumer uses of nats.aio.msg.Msg."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    calls: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.calls.append("ack")

    async def term(self) -> None:
        self.calls.append("term")

    async def nak(self, delay: float | None = None) -> None:
        self.calls.append("nak")


@pytest.fixture
async def notifications() -> AsyncIterator[Notifications]:
    store = await SqliteNotificationStore.open(":memory:")
    try:
        yield Notifications(store, PageTokens(b"k" * 32), Broadcaster())
    finally:
        await store.close()


def test_decode_picks_the_message_type_by_subject(notifications: Notifications) -> None:
    assert decode(ORDER_CONFIRMED, CONFIRMED, notifications).kind is Kind.ORDER_CONFIRMED
    cancelled = events_pb2.OrderCancelled(event_id="e", order_id="o", customer_id="c")
    decoded = decode(ORDER_CANCELLED, cancelled.SerializeToString(), notifications)
    assert decoded.kind is Kind.ORDER_CANCELLED


@pytest.mark.parametrize(
    ("subject", "data"),
    [
        (ORDER_CONFIRMED, b"\xff\xff\xff"),
        (ORDER_CONFIRMED, b""),  # decodes, but has no event_id
        ("shop.orders.shipped", CONFIRMED),
    ],
)
def test_decode_rejects_what_is_no_order_event(
    notifications: Notifications, subject: str, data: bytes
) -> None:
    with pytest.raises(InvalidEvent):
        decode(subject, data, notifications)


async def test_store_then_ack_once_and_ack_a_redelivery_without_a_copy(
    notifications: Notifications,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    consumer = OrderEventsConsumer("nats://unused:4222", notifications, tracer_provider=provider)
    first, again = FakeMsg(ORDER_CONFIRMED, CONFIRMED), FakeMsg(ORDER_CONFIRMED, CONFIRMED)
    await consumer.process(first)  # type: ignore[arg-type]
    await consumer.process(again)  # type: ignore[arg-type]
    assert first.calls == ["ack"]
    assert again.calls == ["ack"]
    page = await notifications.list_notifications("cus_1", 0, "")
    assert [n.source_event_id for n in page.notifications] == ["evt_1"]
    span = exporter.get_finished_spans()[0]
    assert span.name == "shop.orders.confirmed process"
    assert span.kind == trace.SpanKind.CONSUMER
    assert span.attributes is not None
    assert span.attributes["messaging.system"] == "nats"
    assert span.attributes["messaging.destination.name"] == ORDER_CONFIRMED
    assert span.attributes["messaging.message.id"] == "evt_1"


async def test_an_undecodable_message_is_terminated(notifications: Notifications) -> None:
    message = FakeMsg(ORDER_CONFIRMED, b"\xff\xff")
    consumer = OrderEventsConsumer("nats://unused:4222", notifications)
    await consumer.process(message)  # type: ignore[arg-type]
    assert message.calls == ["term"]
    assert (await notifications.list_notifications("cus_1", 0, "")).notifications == []


async def test_the_span_continues_the_publishers_trace(notifications: Notifications) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{span_id}-01"}
    consumer = OrderEventsConsumer("nats://unused:4222", notifications, tracer_provider=provider)
    await consumer.process(FakeMsg(ORDER_CONFIRMED, CONFIRMED, headers))  # type: ignore[arg-type]
    (span,) = exporter.get_finished_spans()
    assert span.parent is not None
    assert trace.format_trace_id(span.parent.trace_id) == trace_id
    assert trace.format_span_id(span.parent.span_id) == span_id


async def test_each_message_is_measured_by_subject_with_its_failure(
    notifications: Notifications,
) -> None:
    endpoint = serve_metrics("127.0.0.1:0", "notifications")
    assert endpoint is not None
    try:
        consumer = OrderEventsConsumer(
            "nats://unused:4222", notifications, metrics=endpoint.metrics
        )
        await consumer.process(FakeMsg(ORDER_CONFIRMED, CONFIRMED))  # type: ignore[arg-type]
        await consumer.process(FakeMsg(ORDER_CONFIRMED, b"\xff\xff"))  # type: ignore[arg-type]
        samples = await asyncio.to_thread(scrape, f"127.0.0.1:{endpoint.port}")
    finally:
        await asyncio.to_thread(endpoint.close)
    counts = values(
        samples,
        "messaging_process_duration_seconds_count",
        "messaging_destination_name",
        "error_type",
    )
    assert counts == {(ORDER_CONFIRMED, ""): 1, (ORDER_CONFIRMED, "invalid_event"): 1}
