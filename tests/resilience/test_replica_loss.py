"""Replica loss: three catalog replicas behind the gateway, one SIGKILLed mid-run.

The gateway reaches catalog by one target listing the three replicas (local
mode's stand-in for compose's DNS name) with round_robin. Steady load runs
through the gateway for 10 s; at 3 s one replica is killed. Every call takes
about 50 ms at catalog (an injected delay), so each replica always has calls
in flight when the kill comes: those fail with UNAVAILABLE, and the traffic
policy's retry (GetProduct is idempotent) sends each again to a live replica.

- With the shop's policy, no call fails.
- Control, the same run with a policy that retries nothing: the calls in
  flight on the dead replica fail, so the test can fail.
After the kill, round_robin sends no new call to the dead replica in either run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc

from localmode.processes import Stack
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import StartStack
from tests.resilience.load import LoadResult, steady_load
from tests.traffic_files import traffic_file

QUIET = {"OTEL_SDK_DISABLED": "true"}
DURATION_S = 10.0
KILL_AT_S = 3.0
CALLERS = 8
DELAY_MS = 50
VICTIM = "catalog-2"


async def _run(start_stack: StartStack, traffic: Path) -> LoadResult:
    env = {
        "catalog": {**QUIET, "FAULT_DELAY_MS": str(DELAY_MS)},
        # One client here: the per-identity rate limit is not what is tested.
        "gateway": {**QUIET, "MESH_TRAFFIC_FILE": str(traffic), "GATEWAY_RATE_PER_SECOND": "0"},
    }
    shop = start_stack(["catalog", "gateway"], env=env, replicas={"catalog": 3})
    assert {"catalog", "catalog-2", "catalog-3"} <= set(shop)
    stack = Stack(shop["gateway"].run_dir)
    victim = stack.pid(VICTIM)
    assert victim is not None

    def kill() -> None:
        os.kill(victim, signal.SIGKILL)

    async with grpc.aio.insecure_channel(str(shop["gateway"].grpc_target)) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        request = catalog_pb2.GetProductRequest(id="prod-chemex")

        async def get() -> None:
            await stub.GetProduct(request, timeout=5.0)

        result = await steady_load(
            get, duration_s=DURATION_S, callers=CALLERS, at=(KILL_AT_S, kill)
        )
    assert not stack.alive(VICTIM)
    return result


async def test_retries_absorb_a_replica_killed_under_load(
    start_stack: StartStack, tmp_path: Path
) -> None:
    result = await _run(start_stack, traffic_file(tmp_path / "traffic.yaml"))
    print(f"with retries: {result.calls} calls, {result.failed} failed {dict(result.details)}")
    assert result.calls > CALLERS * 20  # the load really ran
    assert result.failed == 0, result.details


async def test_control_without_retries_the_killed_replicas_calls_fail(
    start_stack: StartStack, tmp_path: Path
) -> None:
    result = await _run(start_stack, traffic_file(tmp_path / "traffic.yaml", retries=False))
    print(f"without retries: {result.calls} calls, {result.failed} failed {dict(result.details)}")
    assert result.calls > CALLERS * 20
    assert result.failed > 0
    assert set(result.codes) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    # Only the calls in flight at the kill: round_robin sends no new call there.
    assert result.failed <= CALLERS
