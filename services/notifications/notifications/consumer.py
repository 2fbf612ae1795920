"""The durable JetStream consumer that turns order events into notifications.

Delivery is at least once, so the order of work per message is: decode, store
(idempotent by `event_id`), then ack. A crash between store and ack means a
redelivery, which the store's UNIQUE `source_event_id` turns into a no-op
that is acked. A message that cannot be decoded is terminated (`term`): it
would fail the same way on every redelivery.

NATS being down never takes the gRPC server with it: the consumer runs as a
background task that connects, and reconnects, with backoff for as long as
the process lives; ListNotifications keeps serving stored history meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import nats
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from opentelemetry import trace

from mesh.events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ensure_stream,
    extract_context,
    stop_worker,
)
from mesh.metrics import Metrics
from notifications.domain import (
    Notification,
    Notifications,
    from_order_cancelled,
    from_order_confirmed,
    new_notification_id,
)
from notifications.errors import InvalidEvent
from shop.events.v1 import events_pb2

log = logging.getLogger(__name__)

DURABLE_NAME = "notifications"
FILTER_SUBJECT = "shop.orders.>"
_FETCH_BATCH = 16
_FETCH_WAIT_S = 5.0
_MAX_BACKOFF_S = 10.0


def decode(subject: str, data: bytes, notifications: Notifications) -> Notification:
    """The notification for the event in a message; InvalidEvent if there is none."""
    try:
        if subject == ORDER_CONFIRMED:
            confirmed = events_pb2.OrderConfirmed.FromString(data)
            return from_order_confirmed(confirmed, new_notification_id(), notifications.now())
        if subject == ORDER_CANCELLED:
            cancelled = events_pb2.OrderCancelled.FromString(data)
            return from_order_cancelled(cancelled, new_notification_id(), notifications.now())
    except DecodeError as error:
        raise InvalidEvent(f"undecodable {subject} payload: {error}") from None
    raise InvalidEvent(f"no notification for subject {subject!r}")


class OrderEventsConsumer:
    """Pulls order events from JetStream in a background task, from `start` to `stop`."""

    def __init__(
        self,
        nats_url: str,
        notifications: Notifications,
        ack_wait_s: float = 30.0,
        tracer_provider: trace.TracerProvider | None = None,
        connect: Callable[..., Any] = nats.connect,
        skip_ack: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._url = nats_url
        self._notifications = notifications
        self._ack_wait_s = ack_wait_s
        self._tracer_provider = tracer_provider
        self._connect = connect
        self._skip_ack = skip_ack  # test only: see NotificationsConfig.skip_ack
        # The consumer's side of the NATS hop, for the RED metrics (and the
        # mesh console's orders -> notifications edge); None: not measured.
        self._metrics = metrics
        self._client: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None
        # Set once the durable consumer is bound: tests and logs can tell
        # "connected and consuming" from "still trying".
        self.ready = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="order-events-consumer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        client, self._client = self._client, None
        await stop_worker(task, client)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # anything from the network: log, wait, retry
                self.ready.clear()
                log.warning("order events consumer: %s; retrying in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            else:
                backoff = 0.5

    async def _connected(self) -> NatsClient:
        if self._client is not None and not self._client.is_closed:
            return self._client

        async def on_error(error: Exception) -> None:
            log.warning("NATS %s: %s", self._url, error or type(error).__name__)

        async def on_disconnected() -> None:
            if self._task is not None:  # not our own close in `stop`
                log.warning("NATS %s: disconnected", self._url)

        async def on_reconnected() -> None:
            log.info("NATS %s: reconnected", self._url)

        client: NatsClient = await self._connect(
            self._url,
            name="notifications",
            # Never give up, neither on the first connect nor after a drop.
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        self._client = client
        log.info("connected to NATS %s", self._url)
        return client

    async def _consume(self) -> None:
        client = await self._connected()
        js = client.jetstream()
        info = await ensure_stream(js)
        subscription = await js.pull_subscribe(
            FILTER_SUBJECT,
            durable=DURABLE_NAME,
            stream=info.config.name,
            config=api.ConsumerConfig(
                durable_name=DURABLE_NAME,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait_s,
                filter_subject=FILTER_SUBJECT,
                deliver_policy=api.DeliverPolicy.ALL,
            ),
        )
        self.ready.set()
        log.info("consuming %s as durable %r", FILTER_SUBJECT, DURABLE_NAME)
        while True:
            try:
                messages = await subscription.fetch(_FETCH_BATCH, timeout=_FETCH_WAIT_S)
            except nats.errors.TimeoutError:
                continue  # nothing new: ask again
            for message in messages:
                await self.process(message)

    def _tracer(self) -> trace.Tracer:
        # Looked up per message so the global provider set by
        # configure_tracing (or none, when OTEL_SDK_DISABLED) is the one used.
        return trace.get_tracer(__name__, tracer_provider=self._tracer_provider)

    async def process(self, message: Msg) -> None:
        """Handles one delivery: store, then ack; term what can never be handled."""
        started = time.perf_counter()
        error = await self._process(message)
        if self._metrics is not None:
            self._metrics.record_message(message.subject, time.perf_counter() - started, error)

    async def _process(self, message: Msg) -> str | None:
        """`process` without the measuring; what went wrong, if anything."""
        subject = message.subject
        with self._tracer().start_as_current_span(
            f"{subject} process",
            context=extract_context(message.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": subject,
            },
        ) as span:
            try:
                notification = decode(subject, message.data, self._notifications)
            except InvalidEvent as error:
                log.error("terminating message on %s: %s", subject, error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
                await message.term()
                return "invalid_event"
            span.set_attribute("messaging.message.id", notification.source_event_id)
            try:
                created = await self._notifications.record(notification)
            except Exception as error:  # the store failed: let JetStream redeliver
                log.exception("storing event %s failed", notification.source_event_id)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
                await message.nak(delay=1.0)
                return type(error).__name__
            if self._skip_ack:
                log.warning("test switch: event %s stored, not acked", notification.source_event_id)
                return None
            if not created:
                log.info("event %s already processed: acking", notification.source_event_id)
            await message.ack()
            return None
