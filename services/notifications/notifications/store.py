"""The notifications service's own SQLite database, read through aiosqlite.

`source_event_id` is UNIQUE: that constraint, not a check before the insert,
is what makes a redelivered event produce no second notification, even if two
deliveries of one event were ever processed at once. Times are stored as
integer microseconds since the epoch (UTC) so that ordering is numeric.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from notifications.domain import Kind, Notification

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    email TEXT NOT NULL,
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    source_event_id TEXT NOT NULL UNIQUE,
    create_time_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_customer
    ON notifications (customer_id, create_time_us DESC, id DESC);
"""
_COLUMNS = "id, customer_id, email, order_id, kind, subject, body, source_event_id, create_time_us"
Row = tuple[str, str, str, str, str, str, str, str, int]


def _micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


def _notification(row: sqlite3.Row | Row) -> Notification:
    nid, customer, email, order, kind, subject, body, event_id, micros = tuple(row)
    return Notification(
        id=nid,
        customer_id=customer,
        email=email,
        order_id=order,
        kind=Kind(kind),
        subject=subject,
        body=body,
        source_event_id=event_id,
        create_time=_from_micros(micros),
    )


class SqliteNotificationStore:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path | str) -> SqliteNotificationStore:
        """Opens the database, creating it (and its folder) if it is new."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        await connection.executescript(_SCHEMA)
        await connection.commit()
        return cls(connection)

    async def close(self) -> None:
        await self._db.close()

    async def add(self, notification: Notification) -> bool:
        n = notification
        async with self._db.execute(
            f"INSERT INTO notifications ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (source_event_id) DO NOTHING",
            (
                n.id,
                n.customer_id,
                n.email,
                n.order_id,
                n.kind.value,
                n.subject,
                n.body,
                n.source_event_id,
                _micros(n.create_time),
            ),
        ) as cursor:
            created = cursor.rowcount == 1
        await self._db.commit()
        return created

    async def list(self, customer_id: str, offset: int, limit: int) -> Sequence[Notification]:
        sql = (
            f"SELECT {_COLUMNS} FROM notifications WHERE customer_id = ? "
            "ORDER BY create_time_us DESC, id DESC LIMIT ? OFFSET ?"
        )
        async with self._db.execute(sql, (customer_id, limit, offset)) as cursor:
            return [_notification(row) for row in await cursor.fetchall()]

    async def count(self) -> int:
        async with self._db.execute("SELECT count(*) FROM notifications") as cursor:
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])
