"""What the notifications service does, independent of gRPC, NATS and SQLite.

An order event (`shop.events.v1`) becomes one `Notification` with a readable
subject and body; `Notifications` records it once per `event_id`, announces
new ones to live subscribers, and pages through a customer's history. The
store is a protocol so tests can give it a list and the service SQLite.

A read takes the caller's `subject` (`mesh.identity`): None for an internal
caller, who may read any customer's notifications; otherwise only that
customer's, and a request about another (or, for a stream, about every
customer) is `NotYourCustomer`, checked after the request's own validation.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from mesh.identity import check_acts_for
from mesh.paging import PageTokens, page_size
from notifications.broadcast import Broadcaster
from notifications.errors import InvalidArgument, InvalidEvent, NotYourCustomer
from shop.events.v1 import events_pb2

MAX_CUSTOMER_ID_LENGTH = 128
# ISO 4217 currencies whose minor unit is not a hundredth; all others have two
# decimals (EUR, USD, GBP...).
_DECIMALS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "JOD": 3}


class Kind(enum.Enum):
    ORDER_CONFIRMED = "ORDER_CONFIRMED"
    ORDER_CANCELLED = "ORDER_CANCELLED"


@dataclass(frozen=True)
class Notification:
    id: str
    customer_id: str
    email: str
    order_id: str
    kind: Kind
    subject: str
    body: str
    source_event_id: str
    create_time: datetime


@dataclass(frozen=True)
class Page:
    notifications: Sequence[Notification]
    next_page_token: str


class NotificationStore(Protocol):
    async def add(self, notification: Notification) -> bool:
        """Stores it; False (and nothing stored) if its `source_event_id` already was."""
        ...

    async def list(self, customer_id: str, offset: int, limit: int) -> Sequence[Notification]:
        """The customer's notifications newest first, `limit` of them from `offset`."""
        ...


def format_money(amount_minor: int, currency_code: str) -> str:
    """`4950, "EUR"` -> `"49.50 EUR"`, with the currency's own number of decimals."""
    decimals = _DECIMALS.get(currency_code, 2)
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**decimals)
    text = f"{units:,}" if decimals == 0 else f"{units:,}.{minor:0{decimals}d}"
    return f"{sign}{text} {currency_code}".rstrip()


def new_notification_id() -> str:
    return "ntf_" + secrets.token_hex(12)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _require(event_name: str, **fields: str) -> None:
    for name, value in fields.items():
        if not value:
            raise InvalidEvent(f"{event_name} without {name}")


def from_order_confirmed(
    event: events_pb2.OrderConfirmed, notification_id: str, now: datetime
) -> Notification:
    _require(
        "OrderConfirmed",
        event_id=event.event_id,
        order_id=event.order_id,
        customer_id=event.customer_id,
    )
    total = format_money(event.total.amount_minor, event.total.currency_code)
    return Notification(
        id=notification_id,
        customer_id=event.customer_id,
        email=event.email,
        order_id=event.order_id,
        kind=Kind.ORDER_CONFIRMED,
        subject=f"Your order {event.order_id} is confirmed",
        body=(
            f"Thank you for your order {event.order_id}. "
            f"We received your payment of {total} and are preparing your items."
        ),
        source_event_id=event.event_id,
        create_time=now,
    )


def from_order_cancelled(
    event: events_pb2.OrderCancelled, notification_id: str, now: datetime
) -> Notification:
    _require(
        "OrderCancelled",
        event_id=event.event_id,
        order_id=event.order_id,
        customer_id=event.customer_id,
    )
    reason = event.reason.strip() or "no reason was given"
    return Notification(
        id=notification_id,
        customer_id=event.customer_id,
        email=event.email,
        order_id=event.order_id,
        kind=Kind.ORDER_CANCELLED,
        subject=f"Your order {event.order_id} was cancelled",
        body=(
            f"We are sorry: your order {event.order_id} was cancelled ({reason}). "
            "You have not been charged for it."
        ),
        source_event_id=event.event_id,
        create_time=now,
    )


def check_customer_id(customer_id: str, *, required: bool) -> None:
    if required and not customer_id:
        raise InvalidArgument("customer_id", "is required")
    if len(customer_id) > MAX_CUSTOMER_ID_LENGTH:
        raise InvalidArgument("customer_id", f"must be at most {MAX_CUSTOMER_ID_LENGTH} characters")


def check_stream_request(customer_id: str, subject: str | None) -> None:
    """A StreamNotifications request: `customer_id` is optional (empty means
    every customer's), but a caller with a subject may stream only its own."""
    check_customer_id(customer_id, required=False)
    check_acts_for(subject, "customer_id", customer_id, NotYourCustomer)


class Notifications:
    def __init__(
        self,
        store: NotificationStore,
        tokens: PageTokens,
        broadcaster: Broadcaster,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self.broadcaster = broadcaster
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    async def record(self, notification: Notification) -> bool:
        """Stores a notification once per source event and tells live subscribers.

        False when its event was already processed (a redelivery): nothing is
        stored or announced a second time.
        """
        created = await self._store.add(notification)
        if created:
            self.broadcaster.publish(notification)
        return created

    async def list_notifications(
        self, customer_id: str, requested_size: int, page_token: str, *, subject: str | None = None
    ) -> Page:
        check_customer_id(customer_id, required=True)
        size = page_size(requested_size)
        scope = "customer:" + customer_id
        offset = self._tokens.offset(page_token, scope=scope)
        check_acts_for(subject, "customer_id", customer_id, NotYourCustomer)
        # One extra row tells whether a next page exists without a COUNT.
        rows = await self._store.list(customer_id, offset, size + 1)
        if len(rows) <= size:
            return Page(notifications=rows, next_page_token="")
        return Page(
            notifications=rows[:size],
            next_page_token=self._tokens.issue(offset + size, scope=scope),
        )
