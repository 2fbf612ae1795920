"""What the catalog does, independent of gRPC and of SQLite.

`Catalog` validates requests, pages through a `ProductStore` and raises the
errors of `catalog.errors`. The store is a protocol so tests can give it an
in-memory list and the service an SQLite database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from catalog.errors import InvalidArgument, ProductNotFound
from mesh.paging import PageTokens, page_size

MAX_ID_LENGTH = 128
MAX_QUERY_LENGTH = 256
MAX_QUERY_TERMS = 8
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Money:
    currency_code: str
    amount_minor: int


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    description: str
    category: str
    price: Money


@dataclass(frozen=True)
class Page:
    products: Sequence[Product]
    next_page_token: str


class ProductStore(Protocol):
    async def get(self, product_id: str) -> Product | None: ...

    async def list(self, offset: int, limit: int) -> Sequence[Product]:
        """Products ordered by id, `limit` of them from `offset`."""
        ...

    async def search(self, terms: Sequence[str], offset: int, limit: int) -> Sequence[Product]:
        """Products matching every term (as a word prefix), best match first."""
        ...


def search_terms(query: str) -> list[str]:
    """The words of a search query, normalised: lower case, NFKC, no punctuation."""
    if len(query) > MAX_QUERY_LENGTH:
        raise InvalidArgument("query", f"must be at most {MAX_QUERY_LENGTH} characters")
    words = _WORD.findall(unicodedata.normalize("NFKC", query).casefold())
    if not words:
        raise InvalidArgument("query", "must contain at least one word")
    terms = list(dict.fromkeys(words))
    if len(terms) > MAX_QUERY_TERMS:
        raise InvalidArgument("query", f"must have at most {MAX_QUERY_TERMS} different words")
    return terms


class Catalog:
    def __init__(self, store: ProductStore, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    async def get_product(self, product_id: str) -> Product:
        if not product_id:
            raise InvalidArgument("id", "is required")
        if len(product_id) > MAX_ID_LENGTH:
            raise InvalidArgument("id", f"must be at most {MAX_ID_LENGTH} characters")
        product = await self._store.get(product_id)
        if product is None:
            raise ProductNotFound(product_id)
        return product

    async def list_products(self, requested_size: int, page_token: str) -> Page:
        size = page_size(requested_size)
        offset = self._tokens.offset(page_token, scope="list")
        # One extra row tells whether a next page exists without a COUNT.
        rows = await self._store.list(offset, size + 1)
        return self._page(rows, offset, size, scope="list")

    async def search_products(self, query: str, requested_size: int, page_token: str) -> Page:
        terms = search_terms(query)
        size = page_size(requested_size)
        scope = "search:" + " ".join(terms)
        offset = self._tokens.offset(page_token, scope=scope)
        rows = await self._store.search(terms, offset, size + 1)
        return self._page(rows, offset, size, scope=scope)

    def _page(self, rows: Sequence[Product], offset: int, size: int, scope: str) -> Page:
        if len(rows) <= size:
            return Page(products=rows, next_page_token="")
        return Page(
            products=rows[:size],
            next_page_token=self._tokens.issue(offset + size, scope=scope),
        )
