"""CatalogService over real gRPC against the real `python -m catalog` process."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localmode.processes import Stack
from localmode.topology import LocalService
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

NO_TRACING = {"OTEL_SDK_DISABLED": "true"}


@pytest.fixture
def catalog(start_stack: Callable[..., dict[str, LocalService]]) -> LocalService:
    return start_stack(["catalog"], env={"catalog": NO_TRACING})["catalog"]


@pytest.fixture
async def stub(catalog: LocalService) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceAsyncStub]:
    assert catalog.grpc_target is not None
    async with grpc.aio.insecure_channel(catalog.grpc_target) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)


def bad_request_fields(trailers: Any) -> list[str]:
    """Fields named by the google.rpc.BadRequest detail of an error's trailers."""
    raw = dict(trailers).get("grpc-status-details-bin")
    assert raw is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    status = status_pb2.Status.FromString(raw)
    fields = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            fields += [violation.field for violation in request.field_violations]
    return fields


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
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith(f"{field}:")
    assert bad_request_fields(error.value.trailing_metadata() or ()) == [field]


async def test_reports_serving(catalog: LocalService) -> None:
    assert catalog.grpc_target is not None
    async with grpc.aio.insecure_channel(catalog.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "shop.catalog.v1.CatalogService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_sigterm_drains_and_finishes_in_flight_calls(
    start_stack: Callable[..., dict[str, LocalService]],
) -> None:
    env = {**NO_TRACING, "FAULT_DELAY_MS": "1500", "SHUTDOWN_DRAIN_SECONDS": "1"}
    service = start_stack(["catalog"], env={"catalog": env})["catalog"]
    assert service.grpc_target is not None
    pid = Stack(service.run_dir).pid("catalog")
    assert pid is not None
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        in_flight = asyncio.ensure_future(
            stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-chemex"), timeout=10)
        )
        await asyncio.sleep(0.3)  # the call is now inside the server's delay
        os.kill(pid, signal.SIGTERM)
        status = None
        for _ in range(50):  # bounded poll during the 1 s drain
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            status = reply.status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        reply = await in_flight
        assert reply.product.id == "prod-chemex"
