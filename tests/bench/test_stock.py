"""bench.stock: bench orders spread over every product and never ask for a unit that is gone."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.stock import OutOfStock, StockPool, seed_products


def test_units_go_to_the_product_with_the_most_left() -> None:
    pool = StockPool({"prod-a": 3, "prod-b": 1, "prod-c": 2})
    assert [pool.take() for _ in range(3)] == ["prod-a", "prod-a", "prod-c"]
    assert pool.remaining == 3


def test_every_unit_and_no_more() -> None:
    levels = {"prod-a": 5, "prod-b": 2, "prod-empty": 0, "prod-owed": -1}
    pool = StockPool(levels)
    taken = Counter(pool.take() for _ in range(7))
    assert taken == Counter({"prod-a": 5, "prod-b": 2})
    assert pool.remaining == 0
    with pytest.raises(OutOfStock, match="all 7 units in stock are taken"):
        pool.take()


def test_the_seed_has_every_product_once() -> None:
    products = seed_products()
    assert len(products) == len(set(products)) > 30
