"""What the saga needs from the other services, as protocols.

The saga is written against these, so its unit tests give it in-memory
doubles and the service gives it gRPC clients (`orders.upstreams`). Each
method raises `Unreachable` for a transport failure (worth retrying) and
`Refused` for a business answer that ends the saga's forward path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from orders.card import Card
from orders.domain import Line, Money


class Refused(Exception):
    """An upstream said no for a business reason; the message is for the customer."""


@dataclass(frozen=True)
class PaymentOutcome:
    payment_id: str
    charged: bool
    # Set when the card was declined (payments' reason, e.g. card_declined).
    decline_reason: str = ""
    # True when the payment was already refunded.
    refunded: bool = False


class Catalog(Protocol):
    async def prices(self, product_ids: Sequence[str]) -> Mapping[str, Money]:
        """Unit price of each product; ProductNotFound for an unknown one."""
        ...


class Inventory(Protocol):
    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        """Holds the units (idempotent by order); Refused if there are too few."""
        ...

    async def commit(self, order_id: str) -> None:
        """Takes the held units out of stock for good (idempotent)."""
        ...

    async def release(self, order_id: str) -> None:
        """Returns held units to stock; nothing held is not an error (idempotent)."""
        ...


class Payments(Protocol):
    async def charge(
        self, idempotency_key: str, order_id: str, amount: Money, card: Card
    ) -> PaymentOutcome:
        """Charges the card; a decline is an outcome, a malformed card is Refused."""
        ...

    async def resolve_charge(self, idempotency_key: str) -> PaymentOutcome | None:
        """What the charge with this key did; None, and never afterwards, if nothing."""
        ...

    async def refund(self, idempotency_key: str, payment_id: str, reason: str) -> None:
        """Gives the money back (idempotent)."""
        ...
