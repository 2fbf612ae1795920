"""The outbox relay with a stand-in for nats-py's client and JetStream (no server);
a real NATS test lives with the end-to-end tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from nats.js import api
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.events import MSG_ID_HEADER, ORDER_CANCELLED, ORDER_CONFIRMED, ORDERS_STREAM
from orders.events import OutboxEvent
from orders.relay import OutboxRelay

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
STORED = {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"}


def row(
    seq: int, subject: str = ORDER_CONFIRMED, headers: dict[str, str] | None = None
) -> OutboxEvent:
    return OutboxEvent(
        event_id=f"evt-{seq}",
        order_id=f"ord-{seq}",
        subject=subject,
        payload=f"payload {seq}".encode(),
        headers=STORED if headers is None else headers,
        seq=seq,
    )


@dataclass
class FakeOutbox:
    rows: list[OutboxEvent]
    sent: list[int] = field(default_factory=list)
    marked: asyncio.Event = field(default_factory=asyncio.Event)

    async def sent_through(self, seq: int) -> None:
        """Returns once the row `seq` is marked sent."""
        while seq not in self.sent:
            self.marked.clear()
            await self.marked.wait()

    async def unsent(self, limit: int) -> list[OutboxEvent]:
        return [e for e in self.rows if e.seq not in self.sent][:limit]

    async def mark_sent(self, seq: int, when: datetime) -> None:
        assert when.tzinfo is not None
        self.sent.append(seq)
        self.marked.set()


@dataclass
class Publish:
    subject: str
    payload: bytes
    headers: dict[str, str]
    stream: str | None
    sent_before: list[int]  # rows marked sent while this publish was in flight


@dataclass
class FakeJetStream:
    outbox: FakeOutbox
    published: list[Publish] = field(default_factory=list)
    streams_added: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)  # event ids whose publish times out

    async def stream_info(self, name: str) -> api.StreamInfo:
        raise NotFoundError()

    async def add_stream(self, config: api.StreamConfig) -> None:
        assert config.name is not None
        self.streams_added.append(config.name)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,  # noqa: ASYNC109 (nats-py's signature)
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> api.PubAck:
        assert headers is not None
        await asyncio.sleep(0)  # an acknowledgement takes a while: marks must wait for it
        if headers[MSG_ID_HEADER] in self.failing:
            raise TimeoutError("nats: timeout")
        self.published.append(Publish(subject, payload, headers, stream, list(self.outbox.sent)))
        return api.PubAck(stream=stream or "", seq=len(self.published))


@dataclass
class FakeClient:
    js: FakeJetStream
    is_closed: bool = False

    def jetstream(self) -> FakeJetStream:
        return self.js

    async def close(self) -> None:
        self.is_closed = True


@dataclass
class Rig:
    outbox: FakeOutbox
    js: FakeJetStream
    client: FakeClient
    connects: list[tuple[str, dict[str, Any]]]
    exporter: InMemorySpanExporter
    relay: OutboxRelay

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def rig() -> Rig:
    outbox = FakeOutbox([row(1), row(2, ORDER_CANCELLED), row(3)])
    js = FakeJetStream(outbox)
    client = FakeClient(js)
    connects: list[tuple[str, dict[str, Any]]] = []

    async def connect(url: str, **options: Any) -> FakeClient:
        connects.append((url, options))
        return client

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    relay = OutboxRelay(
        "nats://nats.test:4222",
        outbox,
        poll_s=60,
        publish_timeout_s=1.5,
        tracer_provider=provider,
        connect=connect,
    )
    return Rig(outbox, js, client, connects, exporter, relay)


async def test_publishes_unsent_rows_in_order_then_marks_them(rig: Rig) -> None:
    assert await rig.relay.relay_pending() == 3

    assert [(p.subject, p.payload) for p in rig.js.published] == [
        (ORDER_CONFIRMED, b"payload 1"),
        (ORDER_CANCELLED, b"payload 2"),
        (ORDER_CONFIRMED, b"payload 3"),
    ]
    assert [p.headers[MSG_ID_HEADER] for p in rig.js.published] == ["evt-1", "evt-2", "evt-3"]
    assert {p.stream for p in rig.js.published} == {ORDERS_STREAM.name}
    # Each row is marked only after its publish returned.
    assert [p.sent_before for p in rig.js.published] == [[], [1], [1, 2]]
    assert rig.outbox.sent == [1, 2, 3]
    assert rig.js.streams_added == [ORDERS_STREAM.name]
    [(url, options)] = rig.connects
    assert url == "nats://nats.test:4222"
    assert options["name"] == "orders"


async def test_nothing_to_send_connects_to_nothing(rig: Rig) -> None:
    rig.outbox.rows.clear()
    assert await rig.relay.relay_pending() == 0
    assert rig.connects == []


async def test_a_second_pass_reuses_the_connection_and_the_stream(rig: Rig) -> None:
    await rig.relay.relay_pending()
    assert await rig.relay.relay_pending() == 0
    rig.outbox.rows.append(row(4))
    assert await rig.relay.relay_pending() == 1
    assert len(rig.js.published) == 4
    assert len(rig.connects) == 1
    assert rig.js.streams_added == [ORDERS_STREAM.name]


async def test_a_failed_publish_leaves_its_row_and_the_later_ones_unsent(rig: Rig) -> None:
    rig.js.failing.add("evt-2")
    with pytest.raises(TimeoutError):
        await rig.relay.relay_pending()
    assert rig.outbox.sent == [1]
    assert [p.headers[MSG_ID_HEADER] for p in rig.js.published] == ["evt-1"]
    assert [e.seq for e in await rig.outbox.unsent(10)] == [2, 3]

    rig.js.failing.clear()  # NATS is back: the rows go out in their order
    assert await rig.relay.relay_pending() == 2
    assert rig.outbox.sent == [1, 2, 3]
    assert [p.headers[MSG_ID_HEADER] for p in rig.js.published] == ["evt-1", "evt-2", "evt-3"]


async def test_each_publish_continues_the_stored_trace(rig: Rig) -> None:
    rig.outbox.rows[:] = [row(1), row(2, headers={})]
    await rig.relay.relay_pending()
    continued, fresh = rig.spans()
    published = {p.headers[MSG_ID_HEADER]: p.headers for p in rig.js.published}

    assert continued.name == f"{ORDER_CONFIRMED} publish"
    assert continued.kind is trace.SpanKind.PRODUCER
    assert continued.context is not None
    assert continued.parent is not None
    assert format(continued.context.trace_id, "032x") == TRACE_ID
    assert format(continued.parent.span_id, "016x") == SPAN_ID
    # The message carries the publish span's context, a child of the stored one.
    span_id = format(continued.context.span_id, "016x")
    assert published["evt-1"]["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"
    assert continued.attributes is not None
    assert continued.attributes["messaging.system"] == "nats"
    assert continued.attributes["messaging.destination.name"] == ORDER_CONFIRMED
    assert continued.attributes["messaging.message.id"] == "evt-1"
    assert continued.attributes["order.id"] == "ord-1"

    # A row stored without a trace context starts a trace of its own.
    assert fresh.parent is None
    assert fresh.context is not None
    assert format(fresh.context.trace_id, "032x") != TRACE_ID
    fresh_trace = format(fresh.context.trace_id, "032x")
    assert published["evt-2"]["traceparent"].startswith(f"00-{fresh_trace}-")


async def test_the_background_loop_sends_and_wakes_then_stops(rig: Rig) -> None:
    rig.relay.start()
    async with asyncio.timeout(5):
        await rig.outbox.sent_through(3)
        assert rig.outbox.sent == [1, 2, 3]
        rig.outbox.rows.append(row(4))
        rig.relay.wake()  # poll_s is a minute: only the wake can send this one now
        await rig.outbox.sent_through(4)
    await rig.relay.stop()
    assert rig.outbox.sent == [1, 2, 3, 4]
    assert rig.client.is_closed
    assert len(rig.js.published) == 4
