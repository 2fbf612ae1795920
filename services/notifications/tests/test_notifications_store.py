"""SqliteNotificationStore against a real SQLite file in a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifications.domain import Kind, Notification
from notifications.store import SqliteNotificationStore

T0 = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def note(nid: str, customer: str, event: str, at: datetime = T0) -> Notification:
    return Notification(
        id=nid,
        customer_id=customer,
        email=f"{customer}@example.com",
        order_id=f"ord_{nid}",
        kind=Kind.ORDER_CANCELLED,
        subject="Your order was cancelled",
        body="Sorry",
        source_event_id=event,
        create_time=at,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteNotificationStore]:
    # A folder that does not exist yet: open creates it.
    store = await SqliteNotificationStore.open(tmp_path / "data" / "notifications.db")
    try:
        yield store
    finally:
        await store.close()


async def test_a_notification_round_trips(store: SqliteNotificationStore) -> None:
    original = note("ntf_1", "cus_1", "evt_1")
    assert await store.add(original)
    assert await store.list("cus_1", 0, 10) == [original]


async def test_a_second_notification_for_one_event_is_refused(
    store: SqliteNotificationStore,
) -> None:
    assert await store.add(note("ntf_1", "cus_1", "evt_1"))
    assert not await store.add(note("ntf_2", "cus_1", "evt_1"))
    assert [n.id for n in await store.list("cus_1", 0, 10)] == ["ntf_1"]
    assert await store.count() == 1


async def test_newest_first_then_by_id_and_only_the_customers(
    store: SqliteNotificationStore,
) -> None:
    later = T0 + timedelta(microseconds=1)
    for row in [
        note("ntf_a", "cus_1", "e1"),
        note("ntf_c", "cus_1", "e2"),
        note("ntf_b", "cus_1", "e3", later),
        note("ntf_z", "cus_2", "e4", later),
    ]:
        assert await store.add(row)
    assert [n.id for n in await store.list("cus_1", 0, 10)] == ["ntf_b", "ntf_c", "ntf_a"]
    assert [n.id for n in await store.list("cus_1", 1, 1)] == ["ntf_c"]
    assert await store.list("cus_1", 3, 10) == []
    assert await store.list("nobody", 0, 10) == []


async def test_notifications_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    store = await SqliteNotificationStore.open(path)
    await store.add(note("ntf_1", "cus_1", "evt_1"))
    await store.close()
    reopened = await SqliteNotificationStore.open(path)
    try:
        assert not await reopened.add(note("ntf_2", "cus_1", "evt_1"))
        assert [n.id for n in await reopened.list("cus_1", 0, 10)] == ["ntf_1"]
    finally:
        await reopened.close()
