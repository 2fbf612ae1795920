"""Smoke test of `python -m bench --only gateway`: catalog, our gateway twice,
the bare proxies (grpc.aio, grpcio sync, grpc-go) and nginx start, answer a
few dozen calls each, and land in the tables.

No timing is asserted (the machine is noisy). grpc-go's proxy is built here
into a temporary folder; nginx (`make bench-tools`) is optional, and without
it the results say why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench.gateway import (
    BARE,
    BARE_SYNC,
    DIRECT,
    GO_PROXY,
    OURS,
    OURS_QUIET,
    REFERENCE,
    GatewayTargets,
    measure_gateways,
    render_gateway,
    start_gateways,
)
from bench.load import Sample
from bench.nginx import NGINX
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.bench.go_anchors import build_go_anchor

CALLS = 40
PROXIES = (BARE, BARE_SYNC, GO_PROXY)


@pytest.fixture(scope="module")
def proxy_go(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_anchor(tmp_path_factory, "./proxy", "proxy-go")


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory, proxy_go: Path) -> Iterator[GatewayTargets]:
    stack, started = start_gateways(tmp_path_factory.mktemp("gateway"), NGINX, proxy_go)
    try:
        yield started
    finally:
        stack.stop()


def test_every_path_answers_every_call(paths: GatewayTargets) -> None:
    results = {1: asyncio.run(measure_gateways(paths.targets, CALLS, 1, 1))}
    expected = [DIRECT, OURS, OURS_QUIET, *PROXIES, *([REFERENCE] if NGINX.is_file() else [])]
    assert list(results[1]) == expected
    table = render_gateway(results, paths, "pytest")
    for path in expected:
        assert f"| 1 | {path} | {CALLS} |" in table
    for proxy in PROXIES:
        if NGINX.is_file():
            assert f"| {proxy} |" in table.split("x nginx's")[1]  # in the verdict's table
    if NGINX.is_file():
        assert "grpcio's sync API is " in table
        assert f"'{GO_PROXY}' adds " in table


@pytest.mark.parametrize("path", PROXIES)
def test_a_bare_proxy_passes_the_upstream_status_back(paths: GatewayTargets, path: str) -> None:
    """The floor forwards faithfully enough to measure: an answer, and a NOT_FOUND
    that stays NOT_FOUND (grpc.aio's handlers turn it into UNKNOWN, as said)."""

    async def call() -> tuple[str, grpc.StatusCode]:
        async with grpc.aio.insecure_channel(paths.targets[path]) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            found = await stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-chemex"))
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-none"))
            return found.product.id, missing.value.code()

    product, code = asyncio.run(call())
    assert product == "prod-chemex"
    passed_back = grpc.StatusCode.NOT_FOUND if path == GO_PROXY else grpc.StatusCode.UNKNOWN
    assert code is passed_back


def test_a_missing_go_proxy_is_said() -> None:
    sample = Sample([0.001, 0.002], 0.003)
    missing = GatewayTargets({}, "nginx/1.22.1", "/nowhere/proxy-go is missing (`make bench`...)")
    table = render_gateway({1: {DIRECT: sample, OURS: sample}}, missing, "pytest")
    assert f"'{GO_PROXY}' is the same in grpc-go" in table
    assert "not measured: /nowhere/proxy-go is missing" in table
