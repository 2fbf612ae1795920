"""SqliteProductStore against a real SQLite file in a temporary folder."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from catalog.domain import Catalog, Product
from catalog.seed import load_seed_products
from catalog.store import SqliteProductStore
from mesh.paging import PageTokens

EVERYTHING = 10_000


def _seed_json() -> list[dict[str, Any]]:
    text = resources.files("catalog").joinpath("seed_products.json").read_text("utf-8")
    rows: list[dict[str, Any]] = json.loads(text)
    return rows


def _text(product: Product) -> str:
    return f"{product.name} {product.description} {product.category}".casefold()


def _has_word_starting_with(product: Product, prefix: str) -> bool:
    return re.search(rf"\b{re.escape(prefix)}", _text(product)) is not None


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir())


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteProductStore]:
    # A folder that does not exist yet: open creates it.
    store = await SqliteProductStore.open(tmp_path / "data" / "catalog.db")
    try:
        yield store
    finally:
        await store.close()


async def test_a_new_database_is_seeded_from_the_json(store: SqliteProductStore) -> None:
    rows = _seed_json()
    assert len(rows) >= 30
    stored = await store.list(0, EVERYTHING)
    assert len(stored) == len(rows)
    assert {p.id for p in stored} == {row["id"] for row in rows}
    assert sorted(stored, key=lambda p: p.id) == sorted(load_seed_products(), key=lambda p: p.id)


async def test_reopening_does_not_seed_again(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    first = await SqliteProductStore.open(path)
    try:
        before = await first.list(0, EVERYTHING)
    finally:
        await first.close()
    second = await SqliteProductStore.open(str(path))
    try:
        assert await second.list(0, EVERYTHING) == before
        assert len(await second.search(["espresso"], 0, EVERYTHING)) == len(
            [p for p in before if _has_word_starting_with(p, "espresso")]
        )
    finally:
        await second.close()


async def test_an_in_memory_database_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = await SqliteProductStore.open(":memory:")
    try:
        assert len(await store.list(0, EVERYTHING)) == len(_seed_json())
    finally:
        await store.close()
    assert _entries(tmp_path) == []


def test_every_seed_product_is_well_formed() -> None:
    products = load_seed_products()
    assert len({p.id for p in products}) == len(products)
    for product in products:
        assert product.id.startswith("prod-"), product
        assert product.name, product
        assert product.description, product
        assert product.category, product
        assert product.price.currency_code == "EUR", product
        assert product.price.amount_minor > 0, product


async def test_get(store: SqliteProductStore) -> None:
    seeds = {p.id: p for p in load_seed_products()}
    assert await store.get("prod-aeropress") == seeds["prod-aeropress"]
    assert await store.get("prod-unknown") is None
    assert await store.get("") is None


async def test_list_is_ordered_by_id_and_pages_by_offset(store: SqliteProductStore) -> None:
    everything = await store.list(0, EVERYTHING)
    ids = [p.id for p in everything]
    assert ids == sorted(ids)
    paged: list[Product] = []
    for offset in range(0, len(everything), 7):
        paged.extend(await store.list(offset, 7))
    assert paged == list(everything)
    assert await store.list(len(everything), 10) == []


async def test_search_finds_products_containing_the_word(store: SqliteProductStore) -> None:
    found = await store.search(["espresso"], 0, EVERYTHING)
    assert found
    assert all("espresso" in _text(p) for p in found)
    expected = {p.id for p in load_seed_products() if _has_word_starting_with(p, "espresso")}
    assert {p.id for p in found} == expected
    assert "prod-espresso-machine" in expected


async def test_search_matches_word_prefixes(store: SqliteProductStore) -> None:
    found = {p.id for p in await store.search(["gri"], 0, EVERYTHING)}
    assert {"prod-grinder-burr", "prod-grinder-hand"} <= found
    seeds = {p.id: p for p in load_seed_products()}
    assert all(_has_word_starting_with(seeds[pid], "gri") for pid in found)


async def test_search_requires_every_term(store: SqliteProductStore) -> None:
    espresso = {p.id for p in await store.search(["espresso"], 0, EVERYTHING)}
    machine = {p.id for p in await store.search(["machine"], 0, EVERYTHING)}
    both = {p.id for p in await store.search(["espresso", "machine"], 0, EVERYTHING)}
    assert both
    assert both <= espresso & machine
    assert await store.search(["espresso", "zzzzzz"], 0, EVERYTHING) == []


async def test_search_pages_are_deterministic(store: SqliteProductStore) -> None:
    everything = await store.search(["espresso"], 0, EVERYTHING)
    paged: list[Product] = []
    for offset in range(0, len(everything), 2):
        paged.extend(await store.search(["espresso"], offset, 2))
    assert paged == list(everything)


@pytest.mark.parametrize(
    "terms",
    [
        ['"'],
        ['"espresso'],
        ['espresso"'],
        ["NEAR("],
        ["NEAR(espresso grinder)"],
        ["*"],
        ["espresso*"],
        ["AND"],
        ["OR", "NOT"],
        ["^espresso"],
        ["name:espresso"],
        ["{name}"],
        ["-"],
        [""],
    ],
)
async def test_fts_syntax_in_terms_is_plain_text(
    store: SqliteProductStore, terms: Sequence[str]
) -> None:
    await store.search(terms, 0, 10)  # does not raise


@pytest.mark.parametrize(
    "query", ['"espresso', 'espresso" OR NEAR(grinder', "gri*", "^tea", "name:espresso", "(tea)"]
)
async def test_fts_syntax_in_a_query_is_plain_text(store: SqliteProductStore, query: str) -> None:
    catalog = Catalog(store, PageTokens(b"k" * 32))
    await catalog.search_products(query, 10, "")  # does not raise


# --- the in-memory copy reads are served from --------------------------------

SEARCHES = (["espresso"], ["tea"], ["grind"], ["mug", "ceramic"], ["nothing-matches"])


async def _answers(store: SqliteProductStore) -> list[object]:
    ids = [p.id for p in load_seed_products()] + ["prod-missing"]
    return [
        [await store.get(pid) for pid in ids],
        list(await store.list(0, EVERYTHING)),
        list(await store.list(5, 7)),
        *[list(await store.search(terms, 0, EVERYTHING)) for terms in SEARCHES],
    ]


async def test_the_copy_answers_exactly_as_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    store = await SqliteProductStore.open(path)
    try:
        from_memory = await _answers(store)
    finally:
        await store.close()
    # The same queries on the file itself.
    from_file = await _answers(_FileOnly(path))
    assert from_memory == from_file
    assert any(from_memory[3:])  # the searches found something


async def test_a_change_to_the_file_reaches_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    store = await SqliteProductStore.open(path, refresh_s=0.05)
    try:
        before = await store.get("prod-chemex")
        assert before is not None
        assert not await store.refresh()  # nothing changed: no new copy
        # Another process (the catalog serves no writes) reprices it.
        with sqlite3.connect(path) as other:
            other.execute("UPDATE products SET price_minor = 1 WHERE id = 'prod-chemex'")
        for _ in range(200):  # the watcher looks every 50 ms
            after = await store.get("prod-chemex")
            if after != before:
                break
            await asyncio.sleep(0.01)
        assert after is not None
        assert after.price.amount_minor == 1
        assert await _answers(store) == await _answers(_FileOnly(path))
    finally:
        await store.close()


class _FileOnly(SqliteProductStore):
    """Reads the file itself on every call: the reference the copy must match."""

    def __init__(self, path: Path) -> None:  # no aiosqlite, no copy, no watcher
        self._memory = sqlite3.connect(path)
