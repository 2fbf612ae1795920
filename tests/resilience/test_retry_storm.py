"""Retry storm bound: an upstream failing every call does not get a multiple of the load.

catalog fails every call with UNAVAILABLE (a fault file rule), and steady
load runs through the gateway, whose policy retries GetProduct up to 3 times
on UNAVAILABLE. catalog's own metrics count the attempts that reached it;
the client counts the calls it made.

- The shop's policy (retry throttling and the breaker), 20 s: attempts stay
  within 1.2 times the calls.
- Retry throttling alone (a breaker that never opens), 10 s: still within
  1.2; once the tokens are down to half, nothing is retried.
- Control, retries without throttling or breaker: each call makes its three
  attempts, three times the load, so the bound can fail.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from mesh.faultctl import write as write_faults
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import StartStack
from tests.metrics_scrape import scrape, values
from tests.resilience.load import LoadResult, steady_load
from tests.traffic_files import NO_BREAKER, traffic_file

CALLERS = 4
PAUSE_S = 0.01
GET_PRODUCT = ("shop.catalog.v1.CatalogService", "GetProduct")
BOUND = 1.2
# max_tokens so high that 100 failing calls (300 attempts) leave more than
# half of them: no throttling in the control.
UNTHROTTLED = {"max_tokens": 1000, "token_ratio": 1}


async def _storm(
    start_stack: StartStack, tmp_path: Path, traffic: Path, *, seconds: float, calls: int = 0
) -> tuple[LoadResult, float]:
    """(what the client saw, attempts catalog served) for `seconds` of load,
    or for `calls` calls one after another."""
    faults = tmp_path / "faults.yaml"
    write_faults(faults, {"catalog": {"*": {"error_ratio": 1, "error_code": "UNAVAILABLE"}}})
    env = {
        "catalog": {"MESH_FAULTS_FILE": str(faults)},
        "gateway": {"MESH_TRAFFIC_FILE": str(traffic), "GATEWAY_RATE_PER_SECOND": "0"},
    }
    shop = start_stack(["jaeger", "catalog", "gateway"], env=env)
    async with grpc.aio.insecure_channel(str(shop["gateway"].grpc_target)) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        request = catalog_pb2.GetProductRequest(id="prod-chemex")

        async def get() -> None:
            await stub.GetProduct(request, timeout=5.0)

        if calls:
            result = LoadResult()
            for _ in range(calls):
                try:
                    await get()
                    result.codes[grpc.StatusCode.OK] += 1
                except grpc.aio.AioRpcError as error:
                    result.codes[error.code()] += 1
        else:
            result = await steady_load(get, duration_s=seconds, callers=CALLERS, pause_s=PAUSE_S)
    samples = scrape(shop["catalog"].environment["MESH_METRICS_ADDRESS"])
    counts = values(samples, "rpc_server_call_duration_seconds_count", "rpc_service", "rpc_method")
    attempts = counts.get(GET_PRODUCT, 0.0)
    assert result.codes[grpc.StatusCode.OK] == 0  # catalog failed them all
    print(
        f"{result.calls} calls, {attempts:.0f} attempts at catalog "
        f"({attempts / result.calls:.3f} per call)"
    )
    return result, attempts


async def test_the_shops_policy_bounds_a_retry_storm(
    start_stack: StartStack, tmp_path: Path
) -> None:
    result, attempts = await _storm(
        start_stack, tmp_path, traffic_file(tmp_path / "traffic.yaml"), seconds=20
    )
    assert result.calls > 500  # steady load, not a trickle
    assert attempts <= BOUND * result.calls


async def test_retry_throttling_alone_bounds_it(start_stack: StartStack, tmp_path: Path) -> None:
    traffic = traffic_file(tmp_path / "traffic.yaml", breaker=NO_BREAKER)
    result, attempts = await _storm(start_stack, tmp_path, traffic, seconds=10)
    assert result.calls > 250
    # Every call reached catalog (no breaker), and a few were retried.
    assert result.calls < attempts <= BOUND * result.calls


async def test_control_unthrottled_retries_triple_the_load(
    start_stack: StartStack, tmp_path: Path
) -> None:
    traffic = traffic_file(tmp_path / "traffic.yaml", breaker=NO_BREAKER)
    policy = traffic.read_text().replace(
        "retry_throttling:\n    max_tokens: 10\n    token_ratio: 0.1",
        f"retry_throttling:\n    max_tokens: {UNTHROTTLED['max_tokens']}\n"
        f"    token_ratio: {UNTHROTTLED['token_ratio']}",
    )
    assert policy != traffic.read_text()
    traffic.write_text(policy)
    result, attempts = await _storm(start_stack, tmp_path, traffic, seconds=0, calls=100)
    assert attempts == 3 * result.calls > BOUND * result.calls
