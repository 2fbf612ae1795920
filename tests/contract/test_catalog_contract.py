"""CatalogService over real gRPC against the real `python -m catalog` process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from localmode.topology import LocalService
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.contract.grpc_checks import (
    NO_TRACING,
    assert_invalid_field,
    assert_serving,
    assert_sigterm_drains,
)


@pytest.fixture
def catalog(start_stack: Callable[..., dict[str, LocalService]]) -> LocalService:
    return start_stack(["catalog"], env={"catalog": NO_TRACING})["catalog"]


@pytest.fixture
async def stub(catalog: LocalService) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceAsyncStub]:
    assert catalog.grpc_target is not None
    async with grpc.aio.insecure_channel(catalog.grpc_target) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)


async def test_get_product(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    reply = await stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-chemex"))
    assert reply.product.id == "prod-chemex"
    assert reply.product.name == "Chemex Six Cup Brewer"
    assert reply.product.price.currency_code == "EUR"
    assert reply.product.price.amount_minor == 4950


async def test_unknown_product_is_not_found(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "prod-nope" in (error.value.details() or "")


async def test_list_pages_until_exhausted(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(100):  # bounded: 36 products in pages of 7
        reply = await stub.ListProducts(
            catalog_pb2.ListProductsRequest(page_size=7, page_token=token)
        )
        seen += [product.id for product in reply.products]
        token = reply.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "a product was repeated"
    assert seen == sorted(seen)
    everything = await stub.ListProducts(catalog_pb2.ListProductsRequest(page_size=100))
    assert seen == [product.id for product in everything.products]
    assert not everything.next_page_token
    assert len(seen) >= 30


async def test_search_pages_until_exhausted(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    whole = await stub.SearchProducts(catalog_pb2.SearchProductsRequest(query="tea", page_size=100))
    expected = [product.id for product in whole.products]
    assert len(expected) >= 3
    seen: list[str] = []
    token = ""
    for _ in range(100):
        reply = await stub.SearchProducts(
            catalog_pb2.SearchProductsRequest(query="tea", page_size=2, page_token=token)
        )
        seen += [product.id for product in reply.products]
        token = reply.next_page_token
        if not token:
            break
    assert seen == expected


async def test_search_matches_every_word(stub: catalog_pb2_grpc.CatalogServiceAsyncStub) -> None:
    reply = await stub.SearchProducts(catalog_pb2.SearchProductsRequest(query="Espresso cups"))
    ids = [product.id for product in reply.products]
    assert ids[0] == "prod-cups-espresso"  # both words in the name rank first
    for product in reply.products:
        text = f"{product.name} {product.description} {product.category}".lower()
        assert "espresso" in text
        assert "cup" in text


async def _first_token(stub: catalog_pb2_grpc.CatalogServiceAsyncStub, query: str = "") -> str:
    if query:
        reply = await stub.SearchProducts(
            catalog_pb2.SearchProductsRequest(query=query, page_size=1)
        )
        return reply.next_page_token
    listed = await stub.ListProducts(catalog_pb2.ListProductsRequest(page_size=1))
    return listed.next_page_token


def _tamper(token: str) -> str:
    flipped = "A" if token[3] != "A" else "B"
    return token[:3] + flipped + token[4:]


@pytest.mark.parametrize(
    ("rpc", "build", "field"),
    [
        ("GetProduct", lambda t: catalog_pb2.GetProductRequest(id=""), "id"),
        ("GetProduct", lambda t: catalog_pb2.GetProductRequest(id="x" * 200), "id"),
        ("ListProducts", lambda t: catalog_pb2.ListProductsRequest(page_size=-1), "page_size"),
        ("ListProducts", lambda t: catalog_pb2.ListProductsRequest(page_size=101), "page_size"),
        ("ListProducts", lambda t: catalog_pb2.ListProductsRequest(page_token="%%%"), "page_token"),
        (
            "ListProducts",
            lambda t: catalog_pb2.ListProductsRequest(page_token=_tamper(t["list"])),
            "page_token",
        ),
        (
            "ListProducts",
            lambda t: catalog_pb2.ListProductsRequest(page_token=t["search"]),
            "page_token",
        ),
        ("SearchProducts", lambda t: catalog_pb2.SearchProductsRequest(query=""), "query"),
        ("SearchProducts", lambda t: catalog_pb2.SearchProductsRequest(query=" ?! "), "query"),
        (
            "SearchProducts",
            lambda t: catalog_pb2.SearchProductsRequest(query="tea", page_size=-5),
            "page_size",
        ),
        (
            "SearchProducts",
            lambda t: catalog_pb2.SearchProductsRequest(query="coffee", page_token=t["search"]),
            "page_token",
        ),
    ],
)
async def test_invalid_argument_names_the_field(
    stub: catalog_pb2_grpc.CatalogServiceAsyncStub,
    rpc: str,
    build: Callable[[dict[str, str]], Any],
    field: str,
) -> None:
    tokens = {"list": await _first_token(stub), "search": await _first_token(stub, "tea")}
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await getattr(stub, rpc)(build(tokens))
    assert_invalid_field(error.value, field)


async def test_reports_serving(catalog: LocalService) -> None:
    assert catalog.grpc_target is not None
    await assert_serving(catalog.grpc_target, "shop.catalog.v1.CatalogService")


async def test_sigterm_drains_and_finishes_in_flight_calls(
    start_stack: Callable[..., dict[str, LocalService]],
) -> None:
    async def slow_call(channel: grpc.aio.Channel) -> catalog_pb2.GetProductResponse:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        return await stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-chemex"), timeout=10)

    reply = await assert_sigterm_drains(start_stack, "catalog", slow_call)
    assert reply.product.id == "prod-chemex"
