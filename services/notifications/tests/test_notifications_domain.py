"""Events to notifications, listing rules and page tokens, without a network."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from mesh.identity import ActsForAnotherCustomer
from mesh.paging import PageTokens
from mesh.status import InvalidField, status_code
from notifications.broadcast import Broadcaster
from notifications.domain import (
    Kind,
    Notification,
    Notifications,
    check_stream_request,
    format_money,
    from_order_cancelled,
    from_order_confirmed,
)
from notifications.errors import STATUSES, InvalidArgument, InvalidEvent, NotYourCustomer
from shop.common.v1.common_pb2 import Money
from shop.events.v1 import events_pb2

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def confirmed(**overrides: object) -> events_pb2.OrderConfirmed:
    fields: dict[str, object] = {
        "event_id": "evt_1",
        "order_id": "ord_x",
        "customer_id": "cus_1",
        "email": "ada@example.com",
        "total": Money(currency_code="EUR", amount_minor=4950),
        "payment_id": "pay_1",
    }
    fields.update(overrides)
    return events_pb2.OrderConfirmed(**fields)  # type: ignore[arg-type]


def cancelled(**overrides: object) -> events_pb2.OrderCancelled:
    fields: dict[str, object] = {
        "event_id": "evt_2",
        "order_id": "ord_y",
        "customer_id": "cus_1",
        "email": "ada@example.com",
        "reason": "payment declined",
    }
    fields.update(overrides)
    return events_pb2.OrderCancelled(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (4950, "EUR", "49.50 EUR"),
        (5, "USD", "0.05 USD"),
        (123456789, "EUR", "1,234,567.89 EUR"),
        (1500, "JPY", "1,500 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (0, "EUR", "0.00 EUR"),
    ],
)
def test_money_is_formatted_from_minor_units(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


def test_a_confirmed_order_becomes_a_confirmation() -> None:
    notification = from_order_confirmed(confirmed(), "ntf_1", NOW)
    assert notification.kind is Kind.ORDER_CONFIRMED
    assert notification.subject == "Your order ord_x is confirmed"
    assert "49.50 EUR" in notification.body
    assert notification.source_event_id == "evt_1"
    assert (notification.customer_id, notification.email) == ("cus_1", "ada@example.com")
    assert notification.order_id == "ord_x"
    assert notification.create_time == NOW
    assert notification.id == "ntf_1"


def test_a_cancelled_order_says_why() -> None:
    notification = from_order_cancelled(cancelled(), "ntf_2", NOW)
    assert notification.kind is Kind.ORDER_CANCELLED
    assert notification.subject == "Your order ord_y was cancelled"
    assert "payment declined" in notification.body
    assert notification.source_event_id == "evt_2"


def test_a_cancellation_without_reason_still_reads_well() -> None:
    notification = from_order_cancelled(cancelled(reason="  "), "ntf_2", NOW)
    assert "no reason was given" in notification.body


@pytest.mark.parametrize("missing", ["event_id", "order_id", "customer_id"])
def test_an_event_without_a_key_field_is_invalid(missing: str) -> None:
    with pytest.raises(InvalidEvent, match=missing):
        from_order_confirmed(confirmed(**{missing: ""}), "ntf", NOW)
    with pytest.raises(InvalidEvent, match=missing):
        from_order_cancelled(cancelled(**{missing: ""}), "ntf", NOW)


class ListStore:
    """The NotificationStore protocol over a list, newest first like SQLite's."""

    def __init__(self) -> None:
        self.rows: list[Notification] = []

    async def add(self, notification: Notification) -> bool:
        if any(n.source_event_id == notification.source_event_id for n in self.rows):
            return False
        self.rows.append(notification)
        return True

    async def list(self, customer_id: str, offset: int, limit: int) -> Sequence[Notification]:
        mine = [n for n in self.rows if n.customer_id == customer_id]
        mine.sort(key=lambda n: (n.create_time, n.id), reverse=True)
        return mine[offset : offset + limit]


def service() -> Notifications:
    return Notifications(ListStore(), PageTokens(b"k" * 32), Broadcaster(), clock=lambda: NOW)


async def add_confirmations(notifications: Notifications, customer: str, count: int) -> None:
    for i in range(count):
        event = confirmed(event_id=f"evt_{customer}_{i}", customer_id=customer, order_id=f"o{i}")
        await notifications.record(
            from_order_confirmed(event, f"ntf_{customer}_{i:03d}", NOW + timedelta(seconds=i))
        )


async def test_record_is_once_per_event() -> None:
    notifications = service()
    first = from_order_confirmed(confirmed(), "ntf_1", NOW)
    again = from_order_confirmed(confirmed(), "ntf_2", NOW)
    with notifications.broadcaster.subscribe(None) as subscription:
        assert await notifications.record(first)
        assert not await notifications.record(again)
        assert await subscription.next() == first
    page = await notifications.list_notifications("cus_1", 0, "")
    assert [n.id for n in page.notifications] == ["ntf_1"]


async def test_pages_go_newest_first_until_exhausted() -> None:
    notifications = service()
    await add_confirmations(notifications, "cus_a", 5)
    await add_confirmations(notifications, "cus_b", 3)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await notifications.list_notifications("cus_a", 2, token)
        assert len(page.notifications) <= 2
        seen += [n.id for n in page.notifications]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"ntf_cus_a_{i:03d}" for i in (4, 3, 2, 1, 0)]


async def test_page_size_zero_means_twenty() -> None:
    notifications = service()
    await add_confirmations(notifications, "cus_a", 25)
    page = await notifications.list_notifications("cus_a", 0, "")
    assert len(page.notifications) == 20
    assert page.next_page_token


@pytest.mark.parametrize(
    ("customer", "size", "field"),
    [
        ("", 0, "customer_id"),
        ("c" * 129, 0, "customer_id"),
        ("cus_a", -1, "page_size"),
        ("cus_a", 101, "page_size"),
    ],
)
async def test_bad_list_requests_name_the_field(customer: str, size: int, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        await service().list_notifications(customer, size, "")
    assert caught.value.field == field


async def test_a_token_is_bound_to_its_customer() -> None:
    notifications = service()
    await add_confirmations(notifications, "cus_a", 3)
    await add_confirmations(notifications, "cus_b", 3)
    token = (await notifications.list_notifications("cus_a", 1, "")).next_page_token
    assert token
    await notifications.list_notifications("cus_a", 1, token)  # valid for its customer
    with pytest.raises(InvalidField) as caught:
        await notifications.list_notifications("cus_b", 1, token)
    assert caught.value.field == "page_token"


@pytest.mark.parametrize("token", ["%%%", "abc", "a.b.c", "eyJvIjogMX0.AAAA"])
async def test_a_malformed_or_forged_token_is_invalid(token: str) -> None:
    with pytest.raises(InvalidField) as caught:
        await service().list_notifications("cus_a", 1, token)
    assert caught.value.field == "page_token"


# --- a caller acting for one customer (the gateway's subject) -------------------


async def test_list_for_a_subject_is_its_own_customers_only() -> None:
    notifications = service()
    await add_confirmations(notifications, "cus_a", 2)
    await add_confirmations(notifications, "cus_b", 2)
    for subject in (None, "cus_a"):  # an internal caller, or cus_a itself
        page = await notifications.list_notifications("cus_a", 10, "", subject=subject)
        assert len(page.notifications) == 2
    token = (await notifications.list_notifications("cus_b", 1, "")).next_page_token
    for page_token in ("", token):  # a genuine token of cus_b's does not help
        with pytest.raises(NotYourCustomer) as caught:
            await notifications.list_notifications("cus_b", 1, page_token, subject="cus_a")
        assert caught.value.field == "customer_id"
        assert str(caught.value) == "customer_id: the caller acts for 'cus_a', not 'cus_b'"


@pytest.mark.parametrize(
    ("customer", "size", "token", "field"),
    [
        ("", 0, "", "customer_id"),
        ("cus_b", 101, "", "page_size"),
        ("cus_b", 0, "%%%", "page_token"),
    ],
)
async def test_a_bad_list_request_is_invalid_whoever_the_caller_acts_for(
    customer: str, size: int, token: str, field: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        await service().list_notifications(customer, size, token, subject="cus_a")
    assert caught.value.field == field


def test_a_stream_for_a_subject_is_its_own_customers_only() -> None:
    check_stream_request("", None)  # an internal caller may watch every customer
    check_stream_request("cus_b", None)
    check_stream_request("cus_a", "cus_a")
    with pytest.raises(NotYourCustomer) as other:
        check_stream_request("cus_b", "cus_a")
    assert str(other.value) == "customer_id: the caller acts for 'cus_a', not 'cus_b'"
    with pytest.raises(NotYourCustomer) as everyone:
        check_stream_request("", "cus_a")
    assert str(everyone.value) == "customer_id: the caller acts for 'cus_a', not every customer"
    with pytest.raises(InvalidArgument) as overlong:  # malformed wins
        check_stream_request("c" * 129, "cus_a")
    assert overlong.value.field == "customer_id"


def test_acting_for_another_customer_is_permission_denied() -> None:
    error = NotYourCustomer("customer_id", "the caller acts for 'cus_a', not 'cus_b'")
    assert isinstance(error, ActsForAnotherCustomer)
    assert status_code(error, STATUSES) == grpc.StatusCode.PERMISSION_DENIED
