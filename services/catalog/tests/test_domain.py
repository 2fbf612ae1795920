"""The catalog's logic over an in-memory store: validation, paging, search terms."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from catalog.domain import (
    MAX_ID_LENGTH,
    MAX_QUERY_LENGTH,
    MAX_QUERY_TERMS,
    Catalog,
    Money,
    Product,
    search_terms,
)
from catalog.errors import ProductNotFound
from mesh.paging import DEFAULT_PAGE_SIZE, PageTokens
from mesh.status import InvalidField


def _product(pid: str, name: str = "", description: str = "", category: str = "misc") -> Product:
    return Product(
        id=pid,
        name=name or pid,
        description=description,
        category=category,
        price=Money(currency_code="EUR", amount_minor=100),
    )


class FakeStore:
    """Just enough of `ProductStore`: ordered by id, prefix search on words."""

    def __init__(self, products: Sequence[Product]) -> None:
        self._products = {p.id: p for p in products}

    def _ordered(self) -> list[Product]:
        return [self._products[pid] for pid in sorted(self._products)]

    async def get(self, product_id: str) -> Product | None:
        return self._products.get(product_id)

    async def list(self, offset: int, limit: int) -> Sequence[Product]:
        return self._ordered()[offset : offset + limit]

    async def search(self, terms: Sequence[str], offset: int, limit: int) -> Sequence[Product]:
        def matches(p: Product) -> bool:
            words = f"{p.name} {p.description} {p.category}".casefold().split()
            return all(any(w.startswith(t) for w in words) for t in terms)

        return [p for p in self._ordered() if matches(p)][offset : offset + limit]


def _catalog(products: Sequence[Product]) -> Catalog:
    return Catalog(FakeStore(products), PageTokens(b"k" * 32))


async def _list_all(catalog: Catalog, size: int) -> tuple[list[str], int]:
    """Every id, page by page, and the number of pages it took."""
    ids: list[str] = []
    token = ""
    for pages in range(1, 1000):
        page = await catalog.list_products(size, token)
        assert len(page.products) <= size
        ids.extend(p.id for p in page.products)
        token = page.next_page_token
        if not token:
            return ids, pages
    raise AssertionError("pagination did not end")


async def _search_all(catalog: Catalog, query: str, size: int) -> list[str]:
    ids: list[str] = []
    token = ""
    for _ in range(1000):
        page = await catalog.search_products(query, size, token)
        ids.extend(p.id for p in page.products)
        token = page.next_page_token
        if not token:
            return ids
    raise AssertionError("pagination did not end")


async def test_get_product_returns_it() -> None:
    espresso = _product("prod-espresso")
    catalog = _catalog([espresso, _product("prod-tea")])
    assert await catalog.get_product("prod-espresso") == espresso


@pytest.mark.parametrize("product_id", ["", "x" * (MAX_ID_LENGTH + 1)])
async def test_get_product_with_an_invalid_id(product_id: str) -> None:
    with pytest.raises(InvalidField) as caught:
        await _catalog([]).get_product(product_id)
    assert caught.value.field == "id"


@pytest.mark.parametrize("product_id", ["prod-unknown", "x" * MAX_ID_LENGTH])
async def test_get_unknown_product(product_id: str) -> None:
    with pytest.raises(ProductNotFound) as caught:
        await _catalog([_product("prod-tea")]).get_product(product_id)
    assert caught.value.product_id == product_id


@pytest.mark.parametrize(("count", "size"), [(7, 3), (6, 3), (1, 1), (5, 100), (0, 10)])
async def test_listing_yields_every_product_once_in_id_order(count: int, size: int) -> None:
    # Inserted in reverse so that the order comes from the catalog, not the input.
    products = [_product(f"prod-{i:03d}") for i in reversed(range(count))]
    ids, pages = await _list_all(_catalog(products), size)
    assert ids == sorted(p.id for p in products)
    # A full last page is not followed by an empty one.
    assert pages == max(1, -(-count // size))


async def test_listing_with_page_size_zero_uses_the_default() -> None:
    products = [_product(f"prod-{i:03d}") for i in range(DEFAULT_PAGE_SIZE + 5)]
    catalog = _catalog(products)
    first = await catalog.list_products(0, "")
    assert len(first.products) == DEFAULT_PAGE_SIZE
    second = await catalog.list_products(0, first.next_page_token)
    assert [p.id for p in second.products] == [p.id for p in products[DEFAULT_PAGE_SIZE:]]
    assert second.next_page_token == ""


@pytest.mark.parametrize("size", [-1, 101])
async def test_listing_with_an_invalid_page_size(size: int) -> None:
    with pytest.raises(InvalidField) as caught:
        await _catalog([]).list_products(size, "")
    assert caught.value.field == "page_size"


async def test_listing_with_a_malformed_token() -> None:
    with pytest.raises(InvalidField) as caught:
        await _catalog([]).list_products(10, "not-a-token")
    assert caught.value.field == "page_token"


def _coffee_and_tea() -> list[Product]:
    return [
        _product("prod-beans", "Espresso beans", "Dark roast", "coffee"),
        _product("prod-cups", "Espresso cups", "Two small cups", "kitchen"),
        _product("prod-machine", "Espresso machine", "Pump espresso maker", "brewing"),
        _product("prod-grinder", "Burr grinder", "For espresso and filter", "brewing"),
        _product("prod-sencha", "Sencha", "Green tea", "tea"),
        _product("prod-matcha", "Matcha", "Powdered green tea", "tea"),
    ]


async def test_search_pages_through_every_match_once() -> None:
    catalog = _catalog(_coffee_and_tea())
    ids = await _search_all(catalog, "espresso", 1)
    assert sorted(ids) == ["prod-beans", "prod-cups", "prod-grinder", "prod-machine"]
    assert len(ids) == len(set(ids))


async def test_search_token_follows_the_normalised_query() -> None:
    catalog = _catalog(_coffee_and_tea())
    first = await catalog.search_products("espresso", 2, "")
    assert first.next_page_token
    # The same words in another spelling are the same request.
    second = await catalog.search_products("ESPRESSO!", 2, first.next_page_token)
    assert len(second.products) == 2
    with pytest.raises(InvalidField) as caught:
        await catalog.search_products("tea", 2, first.next_page_token)
    assert caught.value.field == "page_token"


async def test_list_and_search_tokens_are_not_interchangeable() -> None:
    catalog = _catalog(_coffee_and_tea())
    listed = await catalog.list_products(2, "")
    searched = await catalog.search_products("espresso", 2, "")
    with pytest.raises(InvalidField) as caught:
        await catalog.search_products("espresso", 2, listed.next_page_token)
    assert caught.value.field == "page_token"
    with pytest.raises(InvalidField) as caught:
        await catalog.list_products(2, searched.next_page_token)
    assert caught.value.field == "page_token"


async def test_search_validates_query_before_page_size() -> None:
    with pytest.raises(InvalidField) as caught:
        await _catalog([]).search_products("", -1, "")
    assert caught.value.field == "query"
    with pytest.raises(InvalidField) as caught:
        await _catalog([]).search_products("tea", -1, "")
    assert caught.value.field == "page_size"


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("espresso", ["espresso"]),
        ("Espresso GRINDER", ["espresso", "grinder"]),
        ("  espresso,   grinder!? ", ["espresso", "grinder"]),
        ('"espresso" OR NEAR(grinder *', ["espresso", "or", "near", "grinder"]),
        ("espresso Espresso ESPRESSO tea", ["espresso", "tea"]),
        ("\uff45\uff53\uff50\uff52\uff45\uff53\uff53\uff4f", ["espresso"]),  # full-width, NFKC
        ("Straße", ["strasse"]),  # casefold, not just lower
        ("café crème", ["café", "crème"]),
        ("v60 02", ["v60", "02"]),
    ],
)
def test_search_terms_are_normalised(query: str, terms: list[str]) -> None:
    assert search_terms(query) == terms


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "!?.,;:-",
        '"*" ()',
        " ".join(f"w{i}" for i in range(MAX_QUERY_TERMS + 1)),
        "a" * (MAX_QUERY_LENGTH + 1),
    ],
)
def test_invalid_search_queries(query: str) -> None:
    with pytest.raises(InvalidField) as caught:
        search_terms(query)
    assert caught.value.field == "query"


def test_search_query_limits_are_inclusive() -> None:
    assert len(search_terms(" ".join(f"w{i}" for i in range(MAX_QUERY_TERMS)))) == MAX_QUERY_TERMS
    assert search_terms("a" * MAX_QUERY_LENGTH) == ["a" * MAX_QUERY_LENGTH]
