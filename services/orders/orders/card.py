"""The card of a PlaceOrder, checked before any order exists.

Payments checks the card too; orders checks first so that a typo is an
INVALID_ARGUMENT naming the field, and not an order that starts a saga only
to be cancelled. The rules are the payments contract's: 12 to 19 digits that
pass Luhn, a month 1-12 and a four-digit year not in the past (a card is good
through the last day of its month, in UTC), a CVC of 3 or 4 digits.

The card lives in memory for the length of one saga and is never stored:
only its last four digits, inside the request fingerprint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from orders.errors import InvalidArgument

_DIGITS = re.compile(r"[0-9]{12,19}")
_CVC = re.compile(r"[0-9]{3,4}")


@dataclass(frozen=True)
class Card:
    number: str
    expiry_month: int
    expiry_year: int
    cvc: str
    holder_name: str

    @property
    def last4(self) -> str:
        return self.number[-4:]

    def __repr__(self) -> str:  # never print a card number into a log
        return f"Card(****{self.last4}, {self.expiry_month:02d}/{self.expiry_year})"


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def check_card(card: Card | None, now: datetime) -> Card:
    if card is None:
        raise InvalidArgument("card", "is required")
    if not card.number:
        raise InvalidArgument("card.number", "is required")
    if not _DIGITS.fullmatch(card.number):
        raise InvalidArgument(
            "card.number", "must be 12 to 19 digits with no spaces or other characters"
        )
    if not luhn_valid(card.number):
        raise InvalidArgument("card.number", "fails the Luhn check")
    if not 1 <= card.expiry_month <= 12:
        raise InvalidArgument("card.expiry_month", "must be between 1 and 12")
    if not 1000 <= card.expiry_year <= 9999:
        raise InvalidArgument("card.expiry_year", "must be four digits")
    if card.expiry_year < now.year:
        raise InvalidArgument("card.expiry_year", "the card has expired")
    if card.expiry_year == now.year and card.expiry_month < now.month:
        raise InvalidArgument("card.expiry_month", "the card has expired")
    if not _CVC.fullmatch(card.cvc):
        raise InvalidArgument("card.cvc", "must be 3 or 4 digits")
    return card
