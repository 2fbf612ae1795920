"""Order events over NATS JetStream: the stream, publishing, and the trace across the broker.

The contract (DESIGN, `shop.events.v1`): events go to `shop.orders.confirmed`
and `shop.orders.cancelled` in one stream that deduplicates on the
`Nats-Msg-Id` header, which carries the event's `event_id`; the W3C trace
context of the order travels in the message headers, so a consumer's span
continues the publisher's trace.

`ensure_stream` is what "created idempotently at start by whoever needs it"
means in code: the publisher (orders) and the consumer (notifications) both
call it, in either order, as often as they restart. nats-py is the official
client; this module only adds the shop's conventions on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from opentelemetry import context, propagate

ORDER_CONFIRMED = "shop.orders.confirmed"
ORDER_CANCELLED = "shop.orders.cancelled"
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    # How long JetStream remembers a Nats-Msg-Id: a republish of the same
    # event within this window (an outbox relay retrying after a lost ack)
    # is acknowledged as a duplicate and stored once.
    duplicate_window_s: float


ORDERS_STREAM = StreamSpec(name="SHOP_ORDERS", subjects=("shop.orders.>",), duplicate_window_s=600)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec = ORDERS_STREAM) -> api.StreamInfo:
    """Creates the stream, or brings an existing one to `spec`; safe to call any time."""
    config = api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        storage=api.StorageType.FILE,
        duplicate_window=spec.duplicate_window_s,
    )
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        return await js.add_stream(config)
    current = info.config
    if set(current.subjects or ()) == set(spec.subjects) and (
        current.duplicate_window == spec.duplicate_window_s
    ):
        return info
    return await js.update_stream(config)


def trace_headers() -> dict[str, str]:
    """The current trace context (`traceparent`, `tracestate`, baggage) as message headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


async def publish_event(
    js: JetStreamContext,
    subject: str,
    event_id: str,
    payload: bytes,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
    stream: str = ORDERS_STREAM.name,
) -> api.PubAck:
    """Publishes one event and waits for JetStream's acknowledgement.

    `headers` default to the current trace context; an outbox relay passes the
    ones it stored with the event instead, so the event joins the order's
    trace rather than the relay's. A PubAck with `duplicate=True` means the
    event was already stored: the caller may mark it sent all the same.
    """
    all_headers = dict(trace_headers() if headers is None else headers)
    all_headers[MSG_ID_HEADER] = event_id
    return await js.publish(subject, payload, timeout=timeout_s, stream=stream, headers=all_headers)


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The publisher's trace context from a message's headers (empty if none)."""
    return propagate.extract(dict(headers or {}))


async def stop_worker(task: asyncio.Task[None] | None, client: NatsClient | None) -> None:
    """Cancels a service's NATS worker task and closes its connection.

    A worker (orders' outbox relay, notifications' consumer) is stopped at
    shutdown, when the broker may already be gone: closing quietly is all
    that is left to do.
    """
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if client is not None and not client.is_closed:
        with contextlib.suppress(Exception):
            await client.close()
