"""The card check of PlaceOrder: Luhn, each field's error, expiry, and no number in logs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from orders.card import Card, check_card, luhn_valid
from orders.errors import InvalidArgument

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
GOOD = Card("4242424242424242", 12, 2030, "123", "Ada Lovelace")


@pytest.mark.parametrize(
    "digits",
    [
        "4242424242424242",
        "4111111111111111",
        "5555555555554444",
        "378282246310005",  # 15 digits (Amex)
        "79927398713",  # the textbook example
        "000000000000",
    ],
)
def test_luhn_accepts_valid_numbers(digits: str) -> None:
    assert luhn_valid(digits)


@pytest.mark.parametrize(
    "digits",
    ["4242424242424241", "4111111111111112", "79927398710", "1234567812345678", "1"],
)
def test_luhn_rejects_a_wrong_check_digit(digits: str) -> None:
    assert not luhn_valid(digits)


def test_a_valid_card_is_returned_as_is() -> None:
    assert check_card(GOOD, NOW) is GOOD


def test_a_missing_card_names_the_card_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_card(None, NOW)
    assert caught.value.field == "card"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"number": ""}, "card.number"),
        ({"number": "4242 4242 4242 4242"}, "card.number"),
        ({"number": "4242-4242-4242-4242"}, "card.number"),
        ({"number": "42424242424"}, "card.number"),  # 11 digits
        ({"number": "42424242424242424242"}, "card.number"),  # 20 digits
        ({"number": "\uff14\uff12" * 6}, "card.number"),  # non-ASCII digits
        ({"number": "4242424242424241"}, "card.number"),  # fails Luhn
        ({"expiry_month": 0}, "card.expiry_month"),
        ({"expiry_month": 13}, "card.expiry_month"),
        ({"expiry_month": -1}, "card.expiry_month"),
        ({"expiry_year": 30}, "card.expiry_year"),
        ({"expiry_year": 10_000}, "card.expiry_year"),
        ({"expiry_year": 2025}, "card.expiry_year"),  # expired last year
        ({"cvc": ""}, "card.cvc"),
        ({"cvc": "12"}, "card.cvc"),
        ({"cvc": "12345"}, "card.cvc"),
        ({"cvc": "12a"}, "card.cvc"),
    ],
)
def test_each_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    card = replace(GOOD, **changes)
    with pytest.raises(InvalidArgument) as caught:
        check_card(card, NOW)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_a_luhn_failure_says_so_without_the_number() -> None:
    card = replace(GOOD, number="4242424242424241")
    with pytest.raises(InvalidArgument, match="Luhn") as caught:
        check_card(card, NOW)
    assert card.number not in str(caught.value)


def test_four_digit_cvc_is_accepted() -> None:
    assert check_card(replace(GOOD, cvc="1234"), NOW).cvc == "1234"


def test_a_card_is_good_through_its_expiry_month() -> None:
    this_month = replace(GOOD, expiry_month=3, expiry_year=2026)
    assert check_card(this_month, NOW) is this_month
    last_moment = datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert check_card(this_month, last_moment) is this_month
    next_month = datetime(2026, 4, 1, tzinfo=UTC)
    with pytest.raises(InvalidArgument) as caught:
        check_card(this_month, next_month)
    assert caught.value.field == "card.expiry_month"


def test_last_month_is_expired() -> None:
    with pytest.raises(InvalidArgument, match="expired") as caught:
        check_card(replace(GOOD, expiry_month=2, expiry_year=2026), NOW)
    assert caught.value.field == "card.expiry_month"


def test_december_of_last_year_is_expired_in_january() -> None:
    january = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidArgument) as caught:
        check_card(replace(GOOD, expiry_month=12, expiry_year=2025), january)
    assert caught.value.field == "card.expiry_year"
    later_this_year = replace(GOOD, expiry_month=1, expiry_year=2026)
    assert check_card(later_this_year, january) is later_this_year


def test_an_earlier_month_of_a_later_year_is_valid() -> None:
    card = replace(GOOD, expiry_month=1, expiry_year=2027)
    assert check_card(card, NOW) is card


def test_repr_never_shows_the_number() -> None:
    card = Card("4000056655665556", 7, 2031, "987", "Grace Hopper")
    for text in (repr(card), str(card), f"{card}", f"{card!r}", repr([card])):
        assert card.number not in text
        assert card.number[:12] not in text
        assert "987" not in text  # nor the CVC
        assert "****5556" in text
    assert repr(card) == "Card(****5556, 07/2031)"
    assert card.last4 == "5556"
