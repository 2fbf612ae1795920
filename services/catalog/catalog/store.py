"""The catalog's own SQLite database, and the in-memory copy every read is served from.

The file is opened through aiosqlite, which runs its queries on a worker
thread so that disk reads never stall the event loop: creating and seeding
it on first start, and watching it for changes. Reads are served from an
in-memory copy of it (SQLite's `:memory:`, filled with the backup API),
queried synchronously on the event loop: with no disk under it a query over
the catalog takes microseconds, less than the thread hop it replaces (about
0.1 ms per call; bench/results.md), and the answers are SQLite's own, search
included. The catalog serves no writes; when another process changes the
file (`PRAGMA data_version` moves, looked at every `refresh_s`), a new copy
replaces the old one.

Search uses an FTS5 index over name, description and category, ranked by
bm25 and then id so that pages are deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from catalog.domain import Money, Product
from catalog.seed import load_seed_products

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    price_minor INTEGER NOT NULL CHECK (price_minor >= 0)
);
CREATE VIRTUAL TABLE IF NOT EXISTS products_fts USING fts5(
    name, description, category,
    content='products', content_rowid='rowid', tokenize='unicode61'
);
"""
log = logging.getLogger(__name__)

# How often the file is looked at for changes made by another process.
REFRESH_S = 1.0
_COLUMNS = "p.id, p.name, p.description, p.category, p.currency_code, p.price_minor"


def _product(row: sqlite3.Row | tuple[str, str, str, str, str, int]) -> Product:
    pid, name, description, category, currency, minor = tuple(row)
    return Product(
        id=pid,
        name=name,
        description=description,
        category=category,
        price=Money(currency_code=currency, amount_minor=minor),
    )


def _fts_query(terms: Sequence[str]) -> str:
    # Each term is quoted, so FTS5 operators typed by a user stay plain text,
    # and starred, so "espres" finds "espresso".
    return " ".join('"' + term.replace('"', '""') + '"*' for term in terms)


class SqliteProductStore:
    def __init__(self, connection: aiosqlite.Connection, refresh_s: float = REFRESH_S) -> None:
        self._db = connection
        self._memory: sqlite3.Connection | None = None
        self._version: int | None = None
        self._refresh_s = refresh_s
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path | str, refresh_s: float = REFRESH_S) -> SqliteProductStore:
        """Opens the database, creating and seeding it if it is new, and copies
        it into memory; the copy follows the file's changes every `refresh_s`."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        store = cls(connection, refresh_s)
        await store._migrate()
        await store.refresh()
        store._watcher = asyncio.get_running_loop().create_task(store._watch())
        return store

    async def _migrate(self) -> None:
        await self._db.executescript(_SCHEMA)
        async with self._db.execute("SELECT count(*) FROM products") as cursor:
            row = await cursor.fetchone()
        if row is not None and row[0] == 0:
            await self._seed()

    async def _seed(self) -> None:
        await self._db.executemany(
            "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    p.id,
                    p.name,
                    p.description,
                    p.category,
                    p.price.currency_code,
                    p.price.amount_minor,
                )
                for p in load_seed_products()
            ],
        )
        await self._db.execute("INSERT INTO products_fts(products_fts) VALUES ('rebuild')")
        await self._db.commit()

    async def _data_version(self) -> int:
        async with self._db.execute("PRAGMA data_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    async def refresh(self) -> bool:
        """Copies the file into memory again if it changed since the last copy
        (or there is none); True when it did."""
        version = await self._data_version()
        if self._memory is not None and version == self._version:
            return False
        # Made here, filled and used on other threads: SQLite serialises them.
        copy = sqlite3.connect(":memory:", check_same_thread=False)
        await self._db.backup(copy)
        old, self._memory, self._version = self._memory, copy, version
        if old is not None:
            old.close()
            log.info("the catalog changed on disk: serving the new copy")
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except (sqlite3.Error, ValueError) as error:  # keep serving the copy we have
                log.warning("cannot look at the catalog's file: %s", error)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._memory is not None:
            self._memory.close()
        await self._db.close()

    def _rows(self, sql: str, parameters: tuple[object, ...]) -> list[Product]:
        if self._memory is None:
            raise RuntimeError("the catalog store is closed")
        return [_product(row) for row in self._memory.execute(sql, parameters)]

    async def get(self, product_id: str) -> Product | None:
        sql = f"SELECT {_COLUMNS} FROM products p WHERE p.id = ?"
        rows = self._rows(sql, (product_id,))
        return rows[0] if rows else None

    async def list(self, offset: int, limit: int) -> Sequence[Product]:
        sql = f"SELECT {_COLUMNS} FROM products p ORDER BY p.id LIMIT ? OFFSET ?"
        return self._rows(sql, (limit, offset))

    async def search(self, terms: Sequence[str], offset: int, limit: int) -> Sequence[Product]:
        sql = (
            f"SELECT {_COLUMNS} FROM products_fts f JOIN products p ON p.rowid = f.rowid "
            "WHERE products_fts MATCH ? ORDER BY f.rank, p.id LIMIT ? OFFSET ?"
        )
        return self._rows(sql, (_fts_query(terms), limit, offset))
