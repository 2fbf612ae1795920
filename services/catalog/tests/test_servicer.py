"""The catalog's gRPC contract, over a real in-process server on port 0.

The server is the one `python -m catalog` runs (`create_server`), with the
mesh's health, reflection and interceptors, and a seeded SQLite file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from catalog.config import CatalogConfig
from catalog.seed import load_seed_products
from catalog.server import SERVICE_FULL_NAME, CatalogServer, create_server
from mesh.interceptors import FaultConfig
from mesh.server import ServerConfig, start
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

if TYPE_CHECKING:
    from shop.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

TIMEOUT = 10.0


@dataclass
class Client:
    channel: grpc.aio.Channel
    stub: CatalogServiceAsyncStub


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    config = CatalogConfig(
        server=ServerConfig(
            listen_addr="127.0.0.1:0", grace_s=0.0, drain_s=0.0, faults=FaultConfig()
        ),
        db_path=str(tmp_path / "catalog.db"),
        page_token_key=b"k" * 32,
        log_level="INFO",
    )
    server: CatalogServer = await create_server(config)
    try:
        await start(server.mesh)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.mesh.port}") as channel:
            yield Client(channel, catalog_pb2_grpc.CatalogServiceStub(channel))
    finally:
        await server.mesh.server.stop(None)
        await server.store.close()


async def _list_all(stub: CatalogServiceAsyncStub, size: int) -> list[catalog_pb2.Product]:
    products: list[catalog_pb2.Product] = []
    token = ""
    for _ in range(1000):
        request = catalog_pb2.ListProductsRequest(page_size=size, page_token=token)
        response = await stub.ListProducts(request, timeout=TIMEOUT)
        assert len(response.products) <= size
        products.extend(response.products)
        token = response.next_page_token
        if not token:
            return products
    raise AssertionError("pagination did not end")


async def _search_all(stub: CatalogServiceAsyncStub, query: str, size: int) -> list[str]:
    ids: list[str] = []
    token = ""
    for _ in range(1000):
        request = catalog_pb2.SearchProductsRequest(query=query, page_size=size, page_token=token)
        response = await stub.SearchProducts(request, timeout=TIMEOUT)
        ids.extend(p.id for p in response.products)
        token = response.next_page_token
        if not token:
            return ids
    raise AssertionError("pagination did not end")


async def test_get_product(client: Client) -> None:
    seed = {p.id: p for p in load_seed_products()}["prod-aeropress"]
    request = catalog_pb2.GetProductRequest(id="prod-aeropress")
    response = await client.stub.GetProduct(request, timeout=TIMEOUT)
    product = response.product
    assert product.id == seed.id
    assert product.name == seed.name
    assert product.description == seed.description
    assert product.category == seed.category
    assert product.price.currency_code == "EUR"
    assert product.price.amount_minor == seed.price.amount_minor


async def test_list_products_pages_through_the_whole_catalog(client: Client) -> None:
    products = await _list_all(client.stub, 7)
    ids = [p.id for p in products]
    assert ids == sorted(p.id for p in load_seed_products())
    assert all(p.price.amount_minor > 0 for p in products)


async def test_list_products_default_page_size(client: Client) -> None:
    request = catalog_pb2.ListProductsRequest()
    response = await client.stub.ListProducts(request, timeout=TIMEOUT)
    assert len(response.products) == 20
    assert response.next_page_token


async def test_search_products(client: Client) -> None:
    ids = await _search_all(client.stub, "Espresso", 2)
    assert "prod-espresso-machine" in ids
    assert len(ids) == len(set(ids))
    request = catalog_pb2.SearchProductsRequest(query="espresso", page_size=100)
    response = await client.stub.SearchProducts(request, timeout=TIMEOUT)
    assert [p.id for p in response.products] == ids
    assert response.next_page_token == ""


async def test_search_without_matches_is_an_empty_page(client: Client) -> None:
    request = catalog_pb2.SearchProductsRequest(query="zzzzzz")
    response = await client.stub.SearchProducts(request, timeout=TIMEOUT)
    assert list(response.products) == []
    assert response.next_page_token == ""


async def test_unknown_product_is_not_found(client: Client) -> None:
    request = catalog_pb2.GetProductRequest(id="prod-unknown")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.GetProduct(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "prod-unknown" in (caught.value.details() or "")


def _flip(token: str, index: int) -> str:
    return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]


async def _list_token(stub: CatalogServiceAsyncStub) -> str:
    request = catalog_pb2.ListProductsRequest(page_size=5)
    token = (await stub.ListProducts(request, timeout=TIMEOUT)).next_page_token
    assert token
    return token


async def _search_token(stub: CatalogServiceAsyncStub, query: str) -> str:
    request = catalog_pb2.SearchProductsRequest(query=query, page_size=1)
    token = (await stub.SearchProducts(request, timeout=TIMEOUT)).next_page_token
    assert token
    return token


# Each case sends one invalid request; a case may first make valid calls to get a token.
Call = grpc.aio.UnaryUnaryCall[Any, Any]
Case = Callable[["CatalogServiceAsyncStub"], Awaitable[Call]]


async def _empty_id(stub: CatalogServiceAsyncStub) -> Call:
    return stub.GetProduct(catalog_pb2.GetProductRequest(id=""), timeout=TIMEOUT)


async def _long_id(stub: CatalogServiceAsyncStub) -> Call:
    return stub.GetProduct(catalog_pb2.GetProductRequest(id="x" * 129), timeout=TIMEOUT)


async def _negative_list_size(stub: CatalogServiceAsyncStub) -> Call:
    request = catalog_pb2.ListProductsRequest(page_size=-1)
    return stub.ListProducts(request, timeout=TIMEOUT)


async def _large_list_size(stub: CatalogServiceAsyncStub) -> Call:
    request = catalog_pb2.ListProductsRequest(page_size=101)
    return stub.ListProducts(request, timeout=TIMEOUT)


async def _large_search_size(stub: CatalogServiceAsyncStub) -> Call:
    request = catalog_pb2.SearchProductsRequest(query="tea", page_size=101)
    return stub.SearchProducts(request, timeout=TIMEOUT)


async def _malformed_list_token(stub: CatalogServiceAsyncStub) -> Call:
    request = catalog_pb2.ListProductsRequest(page_token="garbage")
    return stub.ListProducts(request, timeout=TIMEOUT)


async def _malformed_search_token(stub: CatalogServiceAsyncStub) -> Call:
    request = catalog_pb2.SearchProductsRequest(query="tea", page_token="a.b.c")
    return stub.SearchProducts(request, timeout=TIMEOUT)


async def _tampered_list_token(stub: CatalogServiceAsyncStub) -> Call:
    token = _flip(await _list_token(stub), 0)
    request = catalog_pb2.ListProductsRequest(page_size=5, page_token=token)
    return stub.ListProducts(request, timeout=TIMEOUT)


async def _tampered_search_signature(stub: CatalogServiceAsyncStub) -> Call:
    token = await _search_token(stub, "espresso")
    token = _flip(token, token.index(".") + 1)
    request = catalog_pb2.SearchProductsRequest(query="espresso", page_size=1, page_token=token)
    return stub.SearchProducts(request, timeout=TIMEOUT)


async def _token_with_another_query(stub: CatalogServiceAsyncStub) -> Call:
    token = await _search_token(stub, "espresso")
    request = catalog_pb2.SearchProductsRequest(query="tea", page_size=1, page_token=token)
    return stub.SearchProducts(request, timeout=TIMEOUT)


async def _list_token_in_search(stub: CatalogServiceAsyncStub) -> Call:
    token = await _list_token(stub)
    request = catalog_pb2.SearchProductsRequest(query="tea", page_size=5, page_token=token)
    return stub.SearchProducts(request, timeout=TIMEOUT)


async def _empty_query(stub: CatalogServiceAsyncStub) -> Call:
    return stub.SearchProducts(catalog_pb2.SearchProductsRequest(query=""), timeout=TIMEOUT)


async def _punctuation_query(stub: CatalogServiceAsyncStub) -> Call:
    return stub.SearchProducts(catalog_pb2.SearchProductsRequest(query='"*()'), timeout=TIMEOUT)


def _bad_request(trailers: grpc.aio.Metadata) -> error_details_pb2.BadRequest:
    """The BadRequest detail of the `grpc-status-details-bin` trailer."""
    raw = trailers["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    status = status_pb2.Status.FromString(raw)
    assert status.code == code_pb2.INVALID_ARGUMENT
    (detail,) = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    return bad_request


@pytest.mark.parametrize(
    ("case", "field"),
    [
        (_empty_id, "id"),
        (_long_id, "id"),
        (_negative_list_size, "page_size"),
        (_large_list_size, "page_size"),
        (_large_search_size, "page_size"),
        (_malformed_list_token, "page_token"),
        (_malformed_search_token, "page_token"),
        (_tampered_list_token, "page_token"),
        (_tampered_search_signature, "page_token"),
        (_token_with_another_query, "page_token"),
        (_list_token_in_search, "page_token"),
        (_empty_query, "query"),
        (_punctuation_query, "query"),
    ],
)
async def test_invalid_input_is_invalid_argument_naming_the_field(
    client: Client, case: Case, field: str
) -> None:
    call = await case(client.stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ")
    bad_request = _bad_request(await call.trailing_metadata())
    assert [v.field for v in bad_request.field_violations] == [field]
    assert all(v.description for v in bad_request.field_violations)


@pytest.mark.parametrize("service", ["", SERVICE_FULL_NAME])
async def test_health_reports_serving(client: Client, service: str) -> None:
    health = health_pb2_grpc.HealthStub(client.channel)
    request = health_pb2.HealthCheckRequest(service=service)
    response = await health.Check(request, timeout=TIMEOUT)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(client: Client) -> None:
    assert SERVICE_FULL_NAME == "shop.catalog.v1.CatalogService"
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT)]
    (response,) = responses
    names = {s.name for s in response.list_services_response.service}
    assert {SERVICE_FULL_NAME, "grpc.health.v1.Health"} <= names
