"""The orders service's own SQLite database: orders and the transactional outbox.

`finish` writes an order's terminal step and its event in one transaction:
an order is CONFIRMED or CANCELLED exactly when its event is in `outbox`, so
a crash can lose neither. The relay reads unsent rows in `seq` order and
marks each sent once JetStream has acknowledged it.

One aiosqlite connection serves the process; writes take `_write_lock`
because a transaction of two statements must not be committed halfway by
another coroutine's commit on the same connection. WAL lets reads go on
while a write commits; synchronous=FULL keeps a confirmed order through a
power cut, not just a crash.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from orders.domain import Money, Order, OrderItem, Step
from orders.events import OutboxEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    email TEXT NOT NULL,
    items TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    total_minor INTEGER NOT NULL,
    step TEXT NOT NULL,
    cancel_reason TEXT NOT NULL DEFAULT '',
    unreachable TEXT NOT NULL DEFAULT '',
    payment_id TEXT NOT NULL DEFAULT '',
    charged INTEGER NOT NULL DEFAULT 0,
    trace_headers TEXT NOT NULL DEFAULT '{}',
    create_time_us INTEGER NOT NULL,
    update_time_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer
    ON orders (customer_id, create_time_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS orders_in_flight
    ON orders (create_time_us) WHERE step NOT IN ('confirmed', 'cancelled');
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL UNIQUE REFERENCES orders (id),
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    headers TEXT NOT NULL,
    sent_time_us INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_time_us IS NULL;
"""
_COLUMNS = (
    "id, idempotency_key, fingerprint, customer_id, email, items, currency_code, total_minor, "
    "step, cancel_reason, unreachable, payment_id, charged, trace_headers, "
    "create_time_us, update_time_us"
)


def micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


def _items_json(items: Sequence[OrderItem]) -> str:
    return json.dumps(
        [
            [i.product_id, i.quantity, i.unit_price.currency_code, i.unit_price.amount_minor]
            for i in items
        ]
    )


def _row_values(order: Order) -> tuple[Any, ...]:
    return (
        order.id,
        order.idempotency_key,
        order.fingerprint,
        order.customer_id,
        order.email,
        _items_json(order.items),
        order.total.currency_code,
        order.total.amount_minor,
        order.step.value,
        order.cancel_reason,
        order.unreachable,
        order.payment_id,
        int(order.charged),
        json.dumps(dict(order.trace_headers), sort_keys=True),
        micros(order.create_time),
        micros(order.update_time),
    )


def _order(row: sqlite3.Row | tuple[Any, ...]) -> Order:
    (oid, key, fingerprint, customer, email, items, currency, total, step, reason,
     unreachable, payment_id, charged, headers, created, updated) = tuple(row)  # fmt: skip
    return Order(
        id=oid,
        idempotency_key=key,
        fingerprint=fingerprint,
        customer_id=customer,
        email=email,
        items=tuple(
            OrderItem(product, quantity, Money(code, amount))
            for product, quantity, code, amount in json.loads(items)
        ),
        total=Money(currency, total),
        step=Step(step),
        cancel_reason=reason,
        unreachable=unreachable,
        payment_id=payment_id,
        charged=bool(charged),
        trace_headers=json.loads(headers),
        create_time=from_micros(created),
        update_time=from_micros(updated),
    )


class StaleStep(RuntimeError):
    """An order was not at the step its writer expected: two drivers of one saga."""


class SqliteOrderStore:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> SqliteOrderStore:
        """Opens the database, creating it (and its folder) if it is new."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA synchronous = FULL")
        await connection.execute("PRAGMA foreign_keys = ON")
        await connection.executescript(_SCHEMA)
        await connection.commit()
        return cls(connection)

    async def close(self) -> None:
        await self._db.close()

    async def _one(self, where: str, value: str) -> Order | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE {where} = ?", (value,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _order(row)

    async def get(self, order_id: str) -> Order | None:
        return await self._one("id", order_id)

    async def by_key(self, idempotency_key: str) -> Order | None:
        return await self._one("idempotency_key", idempotency_key)

    async def insert(self, order: Order) -> Order:
        """Stores a new order; if its idempotency key is taken, returns that order instead."""
        placeholders = ", ".join("?" * len(_row_values(order)))
        async with self._write_lock:
            await self._db.execute(
                f"INSERT INTO orders ({_COLUMNS}) VALUES ({placeholders}) "
                "ON CONFLICT (idempotency_key) DO NOTHING",
                _row_values(order),
            )
            await self._db.commit()
        stored = await self.by_key(order.idempotency_key)
        assert stored is not None  # inserted, or there before
        return stored

    async def _update(self, order: Order, previous: Step) -> None:
        async with self._db.execute(
            "UPDATE orders SET step = ?, cancel_reason = ?, unreachable = ?, payment_id = ?, "
            "charged = ?, update_time_us = ? WHERE id = ? AND step = ?",
            (
                order.step.value,
                order.cancel_reason,
                order.unreachable,
                order.payment_id,
                int(order.charged),
                micros(order.update_time),
                order.id,
                previous.value,
            ),
        ) as cursor:
            if cursor.rowcount != 1:
                raise StaleStep(f"order {order.id} is no longer at step {previous.value}")

    async def save(self, order: Order, previous: Step) -> None:
        async with self._write_lock:
            try:
                await self._update(order, previous)
            except StaleStep:
                await self._db.rollback()
                raise
            await self._db.commit()

    async def finish(self, order: Order, previous: Step, event: OutboxEvent) -> None:
        async with self._write_lock:
            try:
                await self._update(order, previous)
                await self._db.execute(
                    "INSERT INTO outbox (event_id, order_id, subject, payload, headers) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        event.event_id,
                        event.order_id,
                        event.subject,
                        event.payload,
                        json.dumps(dict(event.headers), sort_keys=True),
                    ),
                )
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()

    async def in_flight(self) -> list[Order]:
        """Orders whose saga has not ended, oldest first."""
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE step NOT IN ('confirmed', 'cancelled') "
            "ORDER BY create_time_us"
        ) as cursor:
            return [_order(row) for row in await cursor.fetchall()]

    async def by_customer(self, customer_id: str, offset: int, limit: int) -> Sequence[Order]:
        sql = (
            f"SELECT {_COLUMNS} FROM orders WHERE customer_id = ? "
            "ORDER BY create_time_us DESC, id DESC LIMIT ? OFFSET ?"
        )
        async with self._db.execute(sql, (customer_id, limit, offset)) as cursor:
            return [_order(row) for row in await cursor.fetchall()]

    async def unsent(self, limit: int) -> list[OutboxEvent]:
        async with self._db.execute(
            "SELECT seq, event_id, order_id, subject, payload, headers FROM outbox "
            "WHERE sent_time_us IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            OutboxEvent(
                seq=seq,
                event_id=event_id,
                order_id=order_id,
                subject=subject,
                payload=bytes(payload),
                headers=json.loads(headers),
            )
            for seq, event_id, order_id, subject, payload, headers in rows
        ]

    async def mark_sent(self, seq: int, when: datetime) -> None:
        async with self._write_lock:
            await self._db.execute(
                "UPDATE outbox SET sent_time_us = ? WHERE seq = ?", (micros(when), seq)
            )
            await self._db.commit()
