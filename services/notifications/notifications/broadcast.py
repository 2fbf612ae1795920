"""In-process fan-out of new notifications to StreamNotifications subscribers.

Each subscriber gets its own bounded queue, so one slow client never holds up
the consumer or the other clients: when its queue is full the subscription
ends (the client reconnects and catches up with ListNotifications) instead of
the process buffering without limit. Closing the broadcaster ends every
subscription and refuses new ones; the servicer turns that into UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifications.domain import Notification

DEFAULT_QUEUE_SIZE = 256


class SubscriptionEnded(Exception):
    """The subscription will deliver nothing more; `reason` says why."""

    def __init__(self, reason: str, *, shutting_down: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.shutting_down = shutting_down


class Subscription:
    """Notifications for one customer (or everyone, `customer_id=None`), in order."""

    def __init__(self, customer_id: str | None, queue_size: int) -> None:
        self.customer_id = customer_id
        self._queue_size = queue_size
        self._items: deque[Notification] = deque()
        self._wakeup = asyncio.Event()
        self._ended: SubscriptionEnded | None = None

    def wants(self, notification: Notification) -> bool:
        return self.customer_id is None or notification.customer_id == self.customer_id

    def offer(self, notification: Notification) -> None:
        if self._ended is not None:
            return
        if len(self._items) >= self._queue_size:
            self.end(SubscriptionEnded("subscriber too slow", shutting_down=False))
            return
        self._items.append(notification)
        self._wakeup.set()

    def end(self, reason: SubscriptionEnded) -> None:
        if self._ended is None:
            self._ended = reason
            self._wakeup.set()

    async def next(self) -> Notification:
        """The next notification; raises SubscriptionEnded once there is none to come.

        Items queued before a shutdown are dropped: the stream ends promptly
        and the client finds them with ListNotifications.
        """
        while True:
            if self._ended is not None:
                raise self._ended
            if self._items:
                return self._items.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()


class Broadcaster:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    @contextmanager
    def subscribe(self, customer_id: str | None) -> Iterator[Subscription]:
        subscription = Subscription(customer_id, self._queue_size)
        if self._closed:
            subscription.end(SubscriptionEnded("server shutting down", shutting_down=True))
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def publish(self, notification: Notification) -> None:
        for subscription in list(self._subscriptions):
            if subscription.wants(notification):
                subscription.offer(notification)

    def close(self) -> None:
        """Ends every subscription, now and to come, as the server shuts down."""
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.end(SubscriptionEnded("server shutting down", shutting_down=True))
