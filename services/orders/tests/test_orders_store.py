"""SqliteOrderStore against a real SQLite file: orders, steps, and the outbox."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mesh.events import ORDER_CANCELLED, ORDER_CONFIRMED
from orders.domain import Money, Order, OrderItem, Step
from orders.events import OutboxEvent
from orders.store import SqliteOrderStore, StaleStep

T0 = datetime(2026, 3, 4, 5, 6, 7, 891_011, tzinfo=UTC)
TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def order(
    oid: str,
    key: str = "",
    customer: str = "cus-1",
    at: datetime = T0,
    step: Step = Step.PLACED,
) -> Order:
    return Order(
        id=oid,
        idempotency_key=key or f"key-{oid}",
        fingerprint=f"fp-{oid}",
        customer_id=customer,
        email=f"{customer}@example.com",
        items=(OrderItem("p-1", 2, Money("EUR", 1250)), OrderItem("p-2", 1, Money("EUR", 99))),
        total=Money("EUR", 2599),
        step=step,
        create_time=at,
        update_time=at,
        trace_headers=TRACE,
    )


def event(order_id: str, event_id: str = "", subject: str = ORDER_CONFIRMED) -> OutboxEvent:
    return OutboxEvent(
        event_id=event_id or f"evt-{order_id}",
        order_id=order_id,
        subject=subject,
        payload=b"\x00payload of " + order_id.encode() + b"\xff",
        headers=TRACE,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteOrderStore]:
    # A folder that does not exist yet: open creates it.
    store = await SqliteOrderStore.open(tmp_path / "data" / "orders.db")
    try:
        yield store
    finally:
        await store.close()


async def finish(store: SqliteOrderStore, original: Order, step: Step = Step.CONFIRMED) -> Order:
    """Walks `original` (stored at PLACED) to `step` with its event."""
    done = replace(original, step=step, update_time=original.update_time + timedelta(seconds=1))
    await store.finish(done, Step.PLACED, event(original.id))
    return done


async def test_an_order_round_trips(store: SqliteOrderStore) -> None:
    original = order("ord-1")
    assert await store.insert(original) == original
    assert await store.get("ord-1") == original
    assert await store.by_key("key-ord-1") == original
    assert await store.get("ord-2") is None
    assert await store.by_key("key-ord-2") is None


async def test_insert_with_a_used_key_returns_the_first_order(store: SqliteOrderStore) -> None:
    first = order("ord-1", key="shared")
    await store.insert(first)
    second = replace(order("ord-2", key="shared"), fingerprint="other", customer_id="cus-2")
    assert await store.insert(second) == first
    assert await store.get("ord-2") is None
    assert await store.in_flight() == [first]


async def test_save_moves_an_order_to_its_next_step(store: SqliteOrderStore) -> None:
    original = order("ord-1")
    await store.insert(original)
    later = T0 + timedelta(seconds=3)
    charged = replace(
        original, step=Step.CHARGED, payment_id="pay-1", charged=True, update_time=later
    )
    await store.save(charged, Step.PLACED)
    assert await store.get("ord-1") == charged
    cancelling = replace(
        charged,
        step=Step.COMPENSATING,
        cancel_reason="the stock could not be committed",
        unreachable="inventory",
        update_time=later + timedelta(seconds=1),
    )
    await store.save(cancelling, Step.CHARGED)
    assert await store.get("ord-1") == cancelling


async def test_save_from_a_stale_step_changes_nothing(
    store: SqliteOrderStore, tmp_path: Path
) -> None:
    original = order("ord-1")
    await store.insert(original)
    reserved = replace(original, step=Step.RESERVED, update_time=T0 + timedelta(seconds=1))
    await store.save(reserved, Step.PLACED)
    # A second driver that still believes the order is PLACED.
    rogue = replace(original, step=Step.COMPENSATING, cancel_reason="rogue", unreachable="x")
    with pytest.raises(StaleStep):
        await store.save(rogue, Step.PLACED)
    assert await store.get("ord-1") == reserved
    # The failed write left no transaction open: another connection can write.
    other = await SqliteOrderStore.open(tmp_path / "data" / "orders.db")
    try:
        await other.insert(order("ord-2"))
    finally:
        await other.close()
    assert await store.get("ord-2") == order("ord-2")
    charged = replace(reserved, step=Step.CHARGED, payment_id="pay-1", charged=True)
    await store.save(charged, Step.RESERVED)
    assert await store.get("ord-1") == charged


async def test_save_of_an_unknown_order_is_stale(store: SqliteOrderStore) -> None:
    with pytest.raises(StaleStep):
        await store.save(order("ord-404"), Step.PLACED)


async def test_finish_writes_the_order_and_its_event(store: SqliteOrderStore) -> None:
    original = order("ord-1")
    await store.insert(original)
    done = await finish(store, original)
    assert await store.get("ord-1") == done
    [row] = await store.unsent(10)
    assert row == replace(event("ord-1"), seq=row.seq)
    assert row.seq > 0
    assert await store.in_flight() == []


async def test_finish_with_a_duplicate_event_changes_nothing(store: SqliteOrderStore) -> None:
    first, second = order("ord-1"), order("ord-2")
    await store.insert(first)
    await store.insert(second)
    await store.finish(replace(first, step=Step.CONFIRMED), Step.PLACED, event("ord-1", "evt-x"))
    cancelled = replace(second, step=Step.CANCELLED, cancel_reason="out of stock")
    with pytest.raises(sqlite3.IntegrityError):
        await store.finish(cancelled, Step.PLACED, event("ord-2", "evt-x", ORDER_CANCELLED))
    # The order's update ran first in that transaction; it was rolled back.
    assert await store.get("ord-2") == second
    assert [e.order_id for e in await store.unsent(10)] == ["ord-1"]
    # Nothing is left half-done: the next write commits on its own.
    await store.finish(cancelled, Step.PLACED, event("ord-2", "evt-y", ORDER_CANCELLED))
    assert await store.get("ord-2") == cancelled
    assert [e.event_id for e in await store.unsent(10)] == ["evt-x", "evt-y"]


async def test_finish_from_a_stale_step_writes_no_event(store: SqliteOrderStore) -> None:
    original = order("ord-1")
    await store.insert(original)
    with pytest.raises(StaleStep):
        await store.finish(replace(original, step=Step.CONFIRMED), Step.CHARGED, event("ord-1"))
    assert await store.get("ord-1") == original
    assert await store.unsent(10) == []


async def test_in_flight_lists_unfinished_orders_oldest_first(store: SqliteOrderStore) -> None:
    young = order("ord-young", at=T0 + timedelta(minutes=2))
    old = order("ord-old", at=T0)
    middle = order("ord-middle", at=T0 + timedelta(minutes=1), customer="cus-2")
    done = order("ord-done", at=T0 - timedelta(minutes=1))
    gone = order("ord-gone", at=T0 - timedelta(minutes=2))
    for each in (young, old, middle, done, gone):
        await store.insert(each)
    await finish(store, done, Step.CONFIRMED)
    await finish(store, gone, Step.CANCELLED)
    moved = replace(middle, step=Step.RELEASED, charged=True, payment_id="pay-1")
    await store.save(moved, Step.PLACED)
    assert [o.id for o in await store.in_flight()] == ["ord-old", "ord-middle", "ord-young"]
    assert (await store.in_flight())[1] == moved


async def test_by_customer_newest_first_with_offset_and_limit(store: SqliteOrderStore) -> None:
    for minute in range(5):
        await store.insert(order(f"ord-{minute}", at=T0 + timedelta(minutes=minute)))
    await store.insert(order("ord-other", customer="cus-2", at=T0 + timedelta(hours=1)))
    # Same time as ord-4: the id breaks the tie, descending.
    await store.insert(order("ord-4b", at=T0 + timedelta(minutes=4)))

    async def ids(offset: int, limit: int) -> list[str]:
        return [o.id for o in await store.by_customer("cus-1", offset, limit)]

    assert await ids(0, 100) == ["ord-4b", "ord-4", "ord-3", "ord-2", "ord-1", "ord-0"]
    assert await ids(0, 2) == ["ord-4b", "ord-4"]
    assert await ids(2, 2) == ["ord-3", "ord-2"]
    assert await ids(5, 2) == ["ord-0"]
    assert await ids(6, 2) == []
    assert [o.id for o in await store.by_customer("cus-2", 0, 10)] == ["ord-other"]
    assert await store.by_customer("cus-3", 0, 10) == []


async def test_unsent_in_seq_order_until_marked_sent(store: SqliteOrderStore) -> None:
    for name in ("ord-b", "ord-a", "ord-c"):
        await store.insert(order(name))
        await finish(store, order(name))
    unsent = await store.unsent(10)
    assert [e.order_id for e in unsent] == ["ord-b", "ord-a", "ord-c"]
    assert [e.seq for e in unsent] == sorted(e.seq for e in unsent)
    assert [e.order_id for e in await store.unsent(2)] == ["ord-b", "ord-a"]
    await store.mark_sent(unsent[1].seq, T0)
    assert [e.order_id for e in await store.unsent(10)] == ["ord-b", "ord-c"]
    await store.mark_sent(unsent[0].seq, T0)
    await store.mark_sent(unsent[2].seq, T0)
    assert await store.unsent(10) == []


async def test_a_reopened_database_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    first = await SqliteOrderStore.open(path)
    try:
        running = order("ord-1", at=T0)
        confirmed = order("ord-2", at=T0 + timedelta(seconds=1))
        sent = order("ord-3", at=T0 + timedelta(seconds=2))
        for each in (running, confirmed, sent):
            await first.insert(each)
        running = replace(running, step=Step.CHARGED, payment_id="pay-1", charged=True)
        await first.save(running, Step.PLACED)
        confirmed = await finish(first, confirmed)
        sent = await finish(first, sent, Step.CANCELLED)
        [_, sent_row] = await first.unsent(10)
        await first.mark_sent(sent_row.seq, T0)
    finally:
        await first.close()
    second = await SqliteOrderStore.open(str(path))
    try:
        assert await second.get("ord-1") == running
        assert await second.get("ord-2") == confirmed
        assert await second.get("ord-3") == sent
        assert await second.in_flight() == [running]
        assert await second.unsent(10) == [replace(event("ord-2"), seq=sent_row.seq - 1)]
        assert await second.insert(order("ord-9", key="key-ord-1")) == running
    finally:
        await second.close()


async def test_an_in_memory_database_works() -> None:
    store = await SqliteOrderStore.open(":memory:")
    try:
        await store.insert(order("ord-1"))
        assert [o.id for o in await store.in_flight()] == ["ord-1"]
    finally:
        await store.close()
