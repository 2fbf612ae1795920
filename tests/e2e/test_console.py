"""The mesh console's API against real processes: Jaeger, catalog and the
gateway with mTLS on, and the console reading their metrics and health ports,
Jaeger's query API and a fault file of the test's own. orders and the others
are not started: the console must show them down, not fail."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from localmode.topology import LocalService
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import JAEGER, require_tool
from tests.shop_calls import wait_until

pytestmark = pytest.mark.e2e

QUICK_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


@pytest.fixture
def mesh(
    start_stack: Callable[..., dict[str, LocalService]], tmp_path: Path
) -> dict[str, LocalService]:
    require_tool(JAEGER)
    faults = tmp_path / "faults" / "faults.yaml"
    return start_stack(
        ["jaeger", "catalog", "gateway", "console"],
        env={
            "catalog": {**QUICK_EXPORT, "MESH_FAULTS_FILE": str(faults)},
            "gateway": {**QUICK_EXPORT, "MESH_FAULTS_FILE": str(faults)},
            "console": {"MESH_FAULTS_FILE": str(faults)},
        },
        mtls=True,
        replicas={"catalog": 1},
    )


def api(console: LocalService, path: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{console.ports[8088]}{path}", data=data, method=method
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def get_products(gateway: LocalService, count: int) -> list[grpc.StatusCode]:
    assert gateway.grpc_target is not None
    codes = []
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        for _ in range(count):
            try:
                stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-chemex"), timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
    return codes


def edge(document: dict[str, Any], edge_id: str) -> dict[str, Any] | None:
    return next((e for e in document["edges"] if e["id"] == edge_id), None)


def test_the_topology_shows_live_edges_health_and_a_fault_switched_from_the_api(
    mesh: dict[str, LocalService],
) -> None:
    console, gateway = mesh["console"], mesh["gateway"]
    first = api(console, "/api/topology")
    health = {n["id"]: n["health"] for n in first["nodes"]}
    assert health["gateway"] == health["catalog"] == "SERVING"
    assert health["orders"] == health["payments"] == "DOWN"  # not started: shown, not fatal
    assert first["errors"]  # the services not started, each named by its address

    assert set(get_products(gateway, 20)) == {grpc.StatusCode.OK}
    time.sleep(1.1)  # past the console's shortest interval between scrapes
    live = api(console, "/api/topology")
    calls = edge(live, "gateway->catalog")
    assert calls is not None, live["edges"]
    assert calls["rate"] > 0
    assert calls["error_ratio"] == 0
    assert calls["p50_ms"] is not None
    assert edge(live, "clients->gateway") is not None

    faults = api(
        console,
        "/api/faults/catalog",
        "PUT",
        {"error_ratio": 1, "error_code": "UNAVAILABLE"},
    )
    assert [(f["service"], f["error_ratio"]) for f in faults["faults"]] == [("catalog", 1.0)]

    def errors_seen() -> dict[str, Any] | None:
        get_products(gateway, 10)
        time.sleep(1.1)
        found = edge(api(console, "/api/topology"), "gateway->catalog")
        return found if found and (found["error_ratio"] or 0) > 0 else None

    broken = wait_until("the fault's errors on gateway->catalog", errors_seen, 30, 0.1)
    assert broken["error_ratio"] > 0
    assert broken["breaker"] in ("closed", "half-open", "open")
    assert api(console, "/api/faults/catalog", "DELETE")["faults"] == []


def test_recent_traces_open_as_waterfalls_parents_first(mesh: dict[str, LocalService]) -> None:
    console, gateway = mesh["console"], mesh["gateway"]
    assert set(get_products(gateway, 3)) == {grpc.StatusCode.OK}

    def traced() -> list[dict[str, Any]] | None:
        found = api(console, "/api/traces?service=gateway&limit=10")
        assert found["error"] is None
        both = [t for t in found["traces"] if {"gateway", "catalog"} <= set(t["services"])]
        return both or None

    traces = wait_until("the calls' traces in Jaeger", traced, 30, 0.5)
    waterfall = api(console, f"/api/traces/{traces[0]['trace_id']}")
    rows = waterfall["rows"]
    assert rows[0]["service"] == "gateway"
    assert rows[0]["depth"] == 0
    seen: set[str] = set()
    for row in rows:
        assert row["parent_id"] is None or row["parent_id"] in seen  # parents first
        seen.add(row["span_id"])
    assert "catalog" in {r["service"] for r in rows}
    assert api(console, "/api/traces?status=error")["traces"] == []
    with pytest.raises(urllib.error.HTTPError) as missing:
        api(console, "/api/traces/" + "0" * 31 + "1")
    assert missing.value.code == 404
    missing.value.close()  # an HTTPError holds the response open


def test_without_jaeger_the_console_says_so_and_keeps_serving(
    start_stack: Callable[..., dict[str, LocalService]], tmp_path: Path
) -> None:
    faults = str(tmp_path / "faults.yaml")
    stack = start_stack(["catalog", "console"], env={"console": {"MESH_FAULTS_FILE": faults}})
    console = stack["console"]
    traces = api(console, "/api/traces")
    assert traces["traces"] == []
    assert "Jaeger" in traces["error"]
    with pytest.raises(urllib.error.HTTPError) as unreachable:
        api(console, "/api/traces/" + "ab" * 16)
    assert unreachable.value.code == 502
    unreachable.value.close()
    health = {n["id"]: n["health"] for n in api(console, "/api/topology")["nodes"]}
    assert health["catalog"] == "SERVING"
    assert health["gateway"] == "DOWN"
