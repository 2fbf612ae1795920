"""PlaceOrder validation, the request fingerprint, pricing, and the order's steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from orders.card import Card
from orders.domain import (
    MAX_ID_LENGTH,
    MAX_LINES,
    MAX_QUANTITY,
    Line,
    Money,
    Order,
    OrderItem,
    PlaceOrder,
    Status,
    Step,
    check_customer_id,
    check_order_id,
    check_place_order,
    priced_items,
)
from orders.errors import InvalidArgument

NOW = datetime(2026, 3, 15, tzinfo=UTC)
CARD = Card("4242424242424242", 12, 2030, "123", "Ada Lovelace")
LINES = (Line("p-1", 2), Line("p-2", 1))


def place(
    idempotency_key: str = "key-1",
    customer_id: str = "cus-1",
    email: str = "ada@example.com",
    lines: Sequence[Line] = LINES,
    card: Card | None = CARD,
) -> PlaceOrder:
    return check_place_order(idempotency_key, customer_id, email, lines, card, NOW)


def field_of(**request: object) -> str:
    with pytest.raises(InvalidArgument) as caught:
        place(**request)  # type: ignore[arg-type]
    return caught.value.field


def test_a_valid_request() -> None:
    request = place(lines=[Line("p-1", 2), Line("p-2", MAX_QUANTITY)])
    assert request == PlaceOrder(
        "key-1", "cus-1", "ada@example.com", (Line("p-1", 2), Line("p-2", MAX_QUANTITY)), CARD
    )
    assert isinstance(request.lines, tuple)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * (MAX_ID_LENGTH + 1)}, "idempotency_key"),
        ({"idempotency_key": "two words"}, "idempotency_key"),
        ({"idempotency_key": "tab\there"}, "idempotency_key"),
        ({"idempotency_key": "clé"}, "idempotency_key"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "c" * (MAX_ID_LENGTH + 1)}, "customer_id"),
        ({"email": ""}, "email"),
        ({"email": "ada"}, "email"),
        ({"email": "ada@example"}, "email"),
        ({"email": "ada lovelace@example.com"}, "email"),
        ({"email": "a@b@example.com"}, "email"),
        ({"email": "a" * 250 + "@x.io"}, "email"),  # 255 characters
        ({"lines": []}, "lines"),
        ({"lines": [Line(f"p-{i}", 1) for i in range(MAX_LINES + 1)]}, "lines"),
        ({"lines": [Line("", 1)]}, "lines[0].product_id"),
        ({"lines": [Line("p-1", 1), Line("p" * (MAX_ID_LENGTH + 1), 1)]}, "lines[1].product_id"),
        ({"lines": [Line("p-1", 1), Line("p-2", 1), Line("p-1", 3)]}, "lines[2].product_id"),
        ({"lines": [Line("p-1", 0)]}, "lines[0].quantity"),
        ({"lines": [Line("p-1", 1), Line("p-2", -1)]}, "lines[1].quantity"),
        ({"lines": [Line("p-1", MAX_QUANTITY + 1)]}, "lines[0].quantity"),
        ({"card": None}, "card"),
        ({"card": replace(CARD, number="4242424242424241")}, "card.number"),
        ({"card": replace(CARD, cvc="1")}, "card.cvc"),
    ],
)
def test_each_bad_field_is_named(request_fields: dict[str, object], field: str) -> None:
    assert field_of(**request_fields) == field


def test_limits_are_inclusive() -> None:
    assert place(idempotency_key="k" * MAX_ID_LENGTH).idempotency_key == "k" * MAX_ID_LENGTH
    assert place(customer_id="c" * MAX_ID_LENGTH).customer_id == "c" * MAX_ID_LENGTH
    many = [Line(f"p-{i}", 1) for i in range(MAX_LINES)]
    assert len(place(lines=many).lines) == MAX_LINES
    email = "a" * 242 + "@example.com"  # 254 characters
    assert place(email=email).email == email
    assert place(idempotency_key="!~key/with:punctuation").idempotency_key


def test_fields_are_checked_in_the_contracts_order() -> None:
    everything_wrong: dict[str, Any] = {
        "idempotency_key": "",
        "customer_id": "",
        "email": "nope",
        "lines": [Line("", 0)],
        "card": None,
    }
    expected = ["idempotency_key", "customer_id", "email", "lines[0].product_id", "card"]
    fixed: dict[str, Any] = {
        "idempotency_key": "key-1",
        "customer_id": "cus-1",
        "email": "ada@example.com",
        "lines": [Line("p-1", 1)],
    }
    request = dict(everything_wrong)
    for name, field in zip([*fixed, "card"], expected, strict=True):
        assert field_of(**request) == field
        if name in fixed:
            request[name] = fixed[name]


def test_a_bad_key_is_reported_before_a_missing_card() -> None:
    assert field_of(idempotency_key="has space", card=None) == "idempotency_key"


def test_a_repeated_product_is_reported_before_its_quantity() -> None:
    assert field_of(lines=[Line("p-1", 1), Line("p-1", 0)]) == "lines[1].product_id"


def test_fingerprint_ignores_the_order_of_lines_and_the_key() -> None:
    first = place(lines=[Line("p-1", 2), Line("p-2", 1)])
    reordered = place(idempotency_key="key-2", lines=[Line("p-2", 1), Line("p-1", 2)])
    assert first.fingerprint() == reordered.fingerprint()
    assert len(first.fingerprint()) == 64


@pytest.mark.parametrize(
    "other",
    [
        {"lines": [Line("p-1", 3), Line("p-2", 1)]},
        {"lines": [Line("p-1", 2)]},
        {"lines": [Line("p-1", 2), Line("p-3", 1)]},
        {"email": "grace@example.com"},
        {"customer_id": "cus-2"},
        {"card": replace(CARD, number="4000056655665556")},  # other last four
        {"card": replace(CARD, expiry_month=11)},
        {"card": replace(CARD, expiry_year=2031)},
    ],
)
def test_fingerprint_differs_for_a_different_request(other: dict[str, object]) -> None:
    assert place(**other).fingerprint() != place().fingerprint()  # type: ignore[arg-type]


def test_fingerprint_takes_only_the_last_four_digits_of_the_card() -> None:
    # Both pass Luhn and end in 4242: the fingerprint cannot tell them apart,
    # so it cannot be reversed into a card number either.
    other_number = replace(CARD, number="4000000000024242", cvc="999", holder_name="X")
    assert place(card=other_number).fingerprint() == place().fingerprint()


def test_priced_items_and_total() -> None:
    prices = {"p-1": Money("EUR", 1250), "p-2": Money("EUR", 300), "p-9": Money("USD", 1)}
    items, total = priced_items([Line("p-1", 2), Line("p-2", 3)], prices)
    assert items == (
        OrderItem("p-1", 2, Money("EUR", 1250)),
        OrderItem("p-2", 3, Money("EUR", 300)),
    )
    assert total == Money("EUR", 2 * 1250 + 3 * 300)


def test_priced_items_refuses_mixed_currencies() -> None:
    prices = {"p-1": Money("EUR", 1250), "p-2": Money("USD", 300)}
    with pytest.raises(ValueError, match=r"EUR.*USD"):
        priced_items([Line("p-1", 1), Line("p-2", 1)], prices)


def test_steps_and_statuses() -> None:
    terminal = {step for step in Step if step.terminal}
    assert terminal == {Step.CONFIRMED, Step.CANCELLED}
    assert Step.CONFIRMED.status is Status.CONFIRMED
    assert Step.CANCELLED.status is Status.CANCELLED
    for step in set(Step) - terminal:
        assert step.status is Status.PENDING


def test_saga_keys_derive_from_the_order_id() -> None:
    order = Order(
        id="ord-1",
        idempotency_key="key-1",
        fingerprint="f",
        customer_id="cus-1",
        email="ada@example.com",
        items=(),
        total=Money("EUR", 0),
        step=Step.RESERVED,
        create_time=NOW,
        update_time=NOW,
    )
    assert (order.charge_key, order.refund_key) == ("ord-1/charge", "ord-1/refund")
    assert order.status is Status.PENDING
    assert not order.terminal


def test_ids_are_checked() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_order_id("")
    assert caught.value.field == "id"
    with pytest.raises(InvalidArgument) as caught:
        check_customer_id("c" * (MAX_ID_LENGTH + 1))
    assert caught.value.field == "customer_id"
    check_order_id("ord-1")
    check_customer_id("cus-1")
