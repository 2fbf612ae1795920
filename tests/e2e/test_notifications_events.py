"""Order events through the real NATS into notifications, traced into the real Jaeger.

- The consumer's span continues the publisher's trace across the broker: a
  Python publisher exports its PRODUCER span to the test's Jaeger, and the
  `notifications` process's CONSUMER span must be its child there.
- Nothing is lost and nothing doubled when a stored event is not acked: the
  message comes back and is acked without a second notification.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider

from localmode.topology import LocalService
from mesh.events import ORDER_CONFIRMED, ORDERS_STREAM, ensure_stream, publish_event
from mesh.paging import PageTokens
from notifications.broadcast import Broadcaster
from notifications.consumer import DURABLE_NAME, OrderEventsConsumer
from notifications.domain import Notification, Notifications
from notifications.store import SqliteNotificationStore
from shop.common.v1.common_pb2 import Money
from shop.events.v1 import events_pb2
from tests.conftest import JAEGER, require_tool
from tracing.jaeger import has_span, wait_for_trace
from tracing.provider import build_tracer_provider

pytestmark = pytest.mark.e2e

StartStack = Callable[..., dict[str, LocalService]]
CONSUMER_SPAN = f"{ORDER_CONFIRMED} process"
WAIT_S = 15.0


def confirmed(event_id: str, customer: str) -> events_pb2.OrderConfirmed:
    return events_pb2.OrderConfirmed(
        event_id=event_id,
        order_id=f"ord_{uuid.uuid4().hex[:8]}",
        customer_id=customer,
        email=f"{customer}@example.com",
        total=Money(currency_code="EUR", amount_minor=1999),
        payment_id="pay_e2e",
    )


@pytest.fixture
def mesh(start_stack: StartStack) -> dict[str, LocalService]:
    require_tool(JAEGER)
    return start_stack(
        ["jaeger", "nats", "notifications"],
        env={"notifications": {"OTEL_BSP_SCHEDULE_DELAY": "200"}},
    )


@pytest.fixture
def provider(mesh: dict[str, LocalService]) -> Iterator[TracerProvider]:
    otlp = f"127.0.0.1:{mesh['jaeger'].ports[4317]}"
    provider = build_tracer_provider(
        "e2e-publisher", "test", exporter=OTLPSpanExporter(endpoint=otlp, insecure=True)
    )
    yield provider
    provider.shutdown()


async def test_the_consumer_span_is_a_child_of_the_publisher_span(
    mesh: dict[str, LocalService], provider: TracerProvider
) -> None:
    client = await nats.connect(f"nats://127.0.0.1:{mesh['nats'].ports[4222]}")
    try:
        js = client.jetstream()
        await ensure_stream(js)
        event = confirmed(f"evt_{uuid.uuid4().hex[:12]}", "cus_traced")
        tracer = provider.get_tracer("e2e")
        with tracer.start_as_current_span(
            f"{ORDER_CONFIRMED} publish", kind=trace.SpanKind.PRODUCER
        ) as publisher:
            await publish_event(js, ORDER_CONFIRMED, event.event_id, event.SerializeToString())
    finally:
        await client.close()
    assert provider.force_flush(10_000)
    context = publisher.get_span_context()
    trace_id = trace.format_trace_id(context.trace_id)
    base_url = f"http://127.0.0.1:{mesh['jaeger'].ports[16686]}"
    found = wait_for_trace(
        trace_id,
        timeout_s=30,
        predicate=has_span("notifications", CONSUMER_SPAN),
        base_url=base_url,
    )
    (span,) = [s for s in found.spans if s.service == "notifications"]
    assert span.operation == CONSUMER_SPAN
    assert span.kind == "CONSUMER"
    assert span.parent_span_id == trace.format_span_id(context.span_id)
    parent = found.span(span.parent_span_id)
    assert parent is not None
    assert parent.service == "e2e-publisher"
    assert span.attributes.get("messaging.system") == "nats"
    assert span.attributes.get("messaging.destination.name") == ORDER_CONFIRMED
    assert span.attributes.get("messaging.message.id") == event.event_id


class CrashAfterStoring(Notifications):
    """Stores the first delivery, then fails as a crash before the ack would."""

    def __init__(self, store: SqliteNotificationStore) -> None:
        super().__init__(store, PageTokens(), Broadcaster())
        self.results: list[bool | str] = []

    async def record(self, notification: Notification) -> bool:
        created = await super().record(notification)
        if not self.results:
            self.results.append("crashed")
            raise RuntimeError("lost before the ack")
        self.results.append(created)
        return created


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteNotificationStore]:
    store = await SqliteNotificationStore.open(tmp_path / "notifications.db")
    try:
        yield store
    finally:
        await store.close()


async def test_an_unacked_event_comes_back_and_still_makes_one_notification(
    start_stack: StartStack, store: SqliteNotificationStore
) -> None:
    url = f"nats://127.0.0.1:{start_stack(['nats'])['nats'].ports[4222]}"
    notifications = CrashAfterStoring(store)
    consumer = OrderEventsConsumer(url, notifications, ack_wait_s=1.0)
    client = await nats.connect(url)
    try:
        consumer.start()
        await asyncio.wait_for(consumer.ready.wait(), WAIT_S)  # the durable exists
        js = client.jetstream()
        await ensure_stream(js)
        event = confirmed(f"evt_{uuid.uuid4().hex[:12]}", "cus_redelivered")
        await publish_event(js, ORDER_CONFIRMED, event.event_id, event.SerializeToString())
        info = None
        for _ in range(int(WAIT_S / 0.1)):  # bounded: until the redelivery is acked
            info = await js.consumer_info(ORDERS_STREAM.name, DURABLE_NAME)
            if len(notifications.results) >= 2 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
        assert notifications.results == ["crashed", False]  # stored once, then a duplicate
        assert info is not None
        assert info.num_ack_pending == 0
        assert info.num_redelivered == 0  # nothing still waiting for another try
        page = await notifications.list_notifications("cus_redelivered", 0, "")
        assert [n.source_event_id for n in page.notifications] == [event.event_id]
    finally:
        await consumer.stop()
        await client.close()
