"""The outbox relay: publishes stored order events to JetStream, in order, at least once.

A row is marked sent only after JetStream acknowledged it. If the process
dies between the ack and the mark, the row is published again on restart
with the same `Nats-Msg-Id`, and the stream's duplicate window drops it;
notifications dedupe by `event_id` as the last line of defence.

NATS being down stops nothing but the relay: rows wait in SQLite, and the
relay retries with backoff until the server is back. It wakes on `wake()`
(an order just ended) or every `poll_s` otherwise.

Each publish is a PRODUCER span whose parent is the trace context stored
with the event (the saga that ended the order), so the consumer's span, a
child of this one, sits in the order's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import nats
from nats.aio.client import Client as NatsClient
from opentelemetry import trace

from mesh.events import ensure_stream, extract_context, publish_event, stop_worker
from orders.events import OutboxEvent

log = logging.getLogger(__name__)

_BATCH = 64
_MAX_BACKOFF_S = 5.0


class Outbox(Protocol):
    async def unsent(self, limit: int) -> list[OutboxEvent]: ...

    async def mark_sent(self, seq: int, when: datetime) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        nats_url: str,
        outbox: Outbox,
        poll_s: float = 1.0,
        publish_timeout_s: float = 5.0,
        tracer_provider: trace.TracerProvider | None = None,
        connect: Callable[..., Any] = nats.connect,
    ) -> None:
        self._url = nats_url
        self._outbox = outbox
        self._poll_s = poll_s
        self._publish_timeout_s = publish_timeout_s
        self._tracer_provider = tracer_provider
        self._connect = connect
        self._client: NatsClient | None = None
        self._stream_ready = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        client, self._client = self._client, None
        await stop_worker(task, client)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                sent = await self.relay_pending()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # NATS down or slow: rows wait, we retry
                log.warning("outbox relay: %s; retrying in %.1fs", error or type(error), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            backoff = 0.2
            if sent == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                self._wake.clear()

    async def _connected(self) -> NatsClient:
        if self._client is not None and not self._client.is_closed:
            return self._client

        async def on_error(error: Exception) -> None:
            log.warning("NATS %s: %s", self._url, error or type(error).__name__)

        client: NatsClient = await self._connect(
            self._url,
            name="orders",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            error_cb=on_error,
        )
        self._client = client
        log.info("connected to NATS %s", self._url)
        return client

    async def relay_pending(self) -> int:
        """Publishes the unsent rows, oldest first; returns how many went out."""
        events = await self._outbox.unsent(_BATCH)
        if not events:
            return 0
        js = (await self._connected()).jetstream()
        if not self._stream_ready:
            await ensure_stream(js)
            self._stream_ready = True
        tracer = trace.get_tracer(__name__, tracer_provider=self._tracer_provider)
        for event in events:
            with tracer.start_as_current_span(
                f"{event.subject} publish",
                context=extract_context(event.headers),
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": event.subject,
                    "messaging.message.id": event.event_id,
                    "order.id": event.order_id,
                },
            ):
                # headers=None: the message carries this publish span's context.
                await publish_event(
                    js,
                    event.subject,
                    event.event_id,
                    event.payload,
                    timeout_s=self._publish_timeout_s,
                )
            await self._outbox.mark_sent(event.seq, datetime.now(UTC))
        return len(events)
