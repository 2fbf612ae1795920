"""The catalog's own SQLite database, read through aiosqlite.

aiosqlite runs every query on one worker thread per connection, so SQLite's
blocking calls never stall the event loop. Search uses an FTS5 index over
name, description and category, ranked by bm25 and then id so that pages are
deterministic. The database is created and seeded on first start.
"""

from __future__ import annotations

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
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path | str) -> SqliteProductStore:
        """Opens the database, creating and seeding it if it is new."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        store = cls(connection)
        await store._migrate()
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

    async def close(self) -> None:
        await self._db.close()

    async def get(self, product_id: str) -> Product | None:
        sql = f"SELECT {_COLUMNS} FROM products p WHERE p.id = ?"
        async with self._db.execute(sql, (product_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _product(row)

    async def list(self, offset: int, limit: int) -> Sequence[Product]:
        sql = f"SELECT {_COLUMNS} FROM products p ORDER BY p.id LIMIT ? OFFSET ?"
        async with self._db.execute(sql, (limit, offset)) as cursor:
            return [_product(row) for row in await cursor.fetchall()]

    async def search(self, terms: Sequence[str], offset: int, limit: int) -> Sequence[Product]:
        sql = (
            f"SELECT {_COLUMNS} FROM products_fts f JOIN products p ON p.rowid = f.rowid "
            "WHERE products_fts MATCH ? ORDER BY f.rank, p.id LIMIT ? OFFSET ?"
        )
        async with self._db.execute(sql, (_fts_query(terms), limit, offset)) as cursor:
            return [_product(row) for row in await cursor.fetchall()]
