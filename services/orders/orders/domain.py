"""What an order is and which requests make one, independent of gRPC, NATS and SQLite.

An `Order` is immutable; each saga step produces the next version with
`dataclasses.replace`, and the store persists it before the next step
starts. `Step` is where the saga stands; `Status` is what the contract shows
(PENDING until the saga ends, then CONFIRMED or CANCELLED).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from orders.card import Card, check_card
from orders.errors import InvalidArgument

MAX_ID_LENGTH = 128
MAX_EMAIL_LENGTH = 254
MAX_LINES = 50
MAX_QUANTITY = 1000
# Printable ASCII without spaces: keys travel in logs and metadata.
_KEY = re.compile(r"[!-~]+")
# Deliberately loose: one @, a dot in the domain, no spaces. Whether the
# mailbox exists is for the mail server to say, not a regular expression.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class Status(enum.Enum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class Step(enum.Enum):
    """Where an order's saga stands. Each value is persisted before the next call."""

    PLACED = "placed"  # stored and priced; nothing asked of inventory yet
    RESERVED = "reserved"  # inventory holds the units
    CHARGED = "charged"  # payments took the money
    COMPENSATING = "compensating"  # cancelling: the units may still be held
    RELEASED = "released"  # cancelling: units released, a charge may need refunding
    CONFIRMED = "confirmed"  # terminal: stock committed, OrderConfirmed in the outbox
    CANCELLED = "cancelled"  # terminal: compensated, OrderCancelled in the outbox

    @property
    def terminal(self) -> bool:
        return self in (Step.CONFIRMED, Step.CANCELLED)

    @property
    def status(self) -> Status:
        if self is Step.CONFIRMED:
            return Status.CONFIRMED
        if self is Step.CANCELLED:
            return Status.CANCELLED
        return Status.PENDING


@dataclass(frozen=True)
class Money:
    currency_code: str
    amount_minor: int


@dataclass(frozen=True)
class Line:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class OrderItem:
    product_id: str
    quantity: int
    unit_price: Money


@dataclass(frozen=True)
class PlaceOrder:
    """A validated PlaceOrder request (the card is checked by `orders.card`)."""

    idempotency_key: str
    customer_id: str
    email: str
    lines: tuple[Line, ...]
    card: Card

    def fingerprint(self) -> str:
        """What makes two requests with one key "the same request".

        The card enters only by its last four digits and expiry: a hash of a
        full card number could be reversed by trying every number.
        """
        canonical = {
            "customer_id": self.customer_id,
            "email": self.email,
            "lines": sorted((line.product_id, line.quantity) for line in self.lines),
            "card": [self.card.last4, self.card.expiry_month, self.card.expiry_year],
        }
        encoded = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class Order:
    id: str
    idempotency_key: str
    fingerprint: str
    customer_id: str
    email: str
    items: tuple[OrderItem, ...]
    total: Money
    step: Step
    create_time: datetime
    update_time: datetime
    cancel_reason: str = ""
    # The upstream whose silence cancelled the order, if that is why: such an
    # order's PlaceOrder answers UNAVAILABLE, as the contract says.
    unreachable: str = ""
    payment_id: str = ""
    # True while money is held: the saga's compensation must refund it.
    charged: bool = False
    # W3C trace context of the PlaceOrder that created the order: a saga
    # resumed after a restart, and its events, continue that trace.
    trace_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return self.step.status

    @property
    def terminal(self) -> bool:
        return self.step.terminal

    # Keys that make each upstream call of this order's saga safe to repeat.
    @property
    def charge_key(self) -> str:
        return f"{self.id}/charge"

    @property
    def refund_key(self) -> str:
        return f"{self.id}/refund"


@dataclass(frozen=True)
class Page:
    orders: Sequence[Order]
    next_page_token: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_order_id() -> str:
    return "ord-" + secrets.token_hex(8)


def new_event_id() -> str:
    return "evt-" + secrets.token_hex(12)


def _check_id(field_name: str, value: str) -> None:
    if not value:
        raise InvalidArgument(field_name, "is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field_name, f"must be at most {MAX_ID_LENGTH} characters")


def check_customer_id(customer_id: str) -> None:
    _check_id("customer_id", customer_id)


def check_order_id(order_id: str) -> None:
    _check_id("id", order_id)


def check_place_order(
    idempotency_key: str,
    customer_id: str,
    email: str,
    lines: Sequence[Line],
    card: Card | None,
    now: datetime,
) -> PlaceOrder:
    """The request as a `PlaceOrder`, or InvalidArgument naming the first bad field
    (in the contract's order: key, customer, email, lines, card)."""
    _check_id("idempotency_key", idempotency_key)
    if not _KEY.fullmatch(idempotency_key):
        raise InvalidArgument(
            "idempotency_key", "must be printable ASCII without spaces (a UUID, say)"
        )
    check_customer_id(customer_id)
    if not email:
        raise InvalidArgument("email", "is required")
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise InvalidArgument("email", f"{email[:64]!r} is not an email address")
    if not lines:
        raise InvalidArgument("lines", "at least one line is required")
    if len(lines) > MAX_LINES:
        raise InvalidArgument("lines", f"at most {MAX_LINES} lines per order")
    seen: set[str] = set()
    for index, line in enumerate(lines):
        _check_id(f"lines[{index}].product_id", line.product_id)
        if line.product_id in seen:
            raise InvalidArgument(
                f"lines[{index}].product_id",
                f"{line.product_id!r} appears twice; order it once with the total quantity",
            )
        seen.add(line.product_id)
        if not 0 < line.quantity <= MAX_QUANTITY:
            raise InvalidArgument(
                f"lines[{index}].quantity", f"must be between 1 and {MAX_QUANTITY}"
            )
    return PlaceOrder(
        idempotency_key=idempotency_key,
        customer_id=customer_id,
        email=email,
        lines=tuple(lines),
        card=check_card(card, now),
    )


def priced_items(
    lines: Sequence[Line], prices: Mapping[str, Money]
) -> tuple[tuple[OrderItem, ...], Money]:
    """The order's items at catalog prices and their total (one currency per order).

    Raises ValueError if the products are priced in different currencies:
    the caller turns that into NotSellable.
    """
    items = tuple(
        OrderItem(line.product_id, line.quantity, prices[line.product_id]) for line in lines
    )
    currencies = {item.unit_price.currency_code for item in items}
    if len(currencies) != 1:
        raise ValueError(f"the products are priced in several currencies: {sorted(currencies)}")
    total = sum(item.unit_price.amount_minor * item.quantity for item in items)
    return items, Money(currencies.pop(), total)
