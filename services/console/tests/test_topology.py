"""Two polls of the mesh's replicas to the /api/topology document."""

from __future__ import annotations

import dataclasses

from console import redmetrics, topology
from console.sources import Replica

OK = 'mesh_callee="catalog",rpc_grpc_status_code="OK"'
METRICS = f"""\
# TYPE rpc_client_call_duration_seconds histogram
rpc_client_call_duration_seconds_bucket{{{{{OK},le="0.005"}}}} {{n}}
rpc_client_call_duration_seconds_bucket{{{{{OK},le="+Inf"}}}} {{n}}
rpc_client_call_duration_seconds_count{{{{{OK}}}}} {{n}}
rpc_client_call_duration_seconds_sum{{{{{OK}}}}} 0.01
# TYPE mesh_breaker_state gauge
mesh_breaker_state{{{{mesh_callee="catalog"}}}} 1
"""


def replica(health: str, calls: int | None) -> Replica:
    text = None if calls is None else METRICS.format(n=calls)
    error = None if text is not None else "127.0.0.1:9/metrics: refused"
    return Replica("127.0.0.1:9", text, health, error)


def test_nodes_carry_health_and_replicas_edges_their_figures_and_breaker() -> None:
    first = {
        "gateway": [replica("SERVING", 10)],
        "catalog": [replica("SERVING", None), replica("DOWN", None)],
    }
    before = topology.scrape_all(first)
    now = dataclasses.replace(topology.scrape_all({"gateway": [replica("SERVING", 30)]}))
    now = topology.Poll(at=before.at + 2.0, scrape=now.scrape)
    document = topology.shape(first, now, before)
    nodes = {n["id"]: n for n in document["nodes"]}
    assert nodes["gateway"] == {
        "id": "gateway",
        "kind": "service",
        "health": "SERVING",
        "replicas": 1,
        "replicas_up": 1,
    }
    assert (nodes["catalog"]["health"], nodes["catalog"]["replicas_up"]) == ("SERVING", 1)
    (edge,) = document["edges"]
    assert edge["id"] == "gateway->catalog"
    assert edge["rate"] == 10.0  # 20 calls in 2 s
    assert edge["error_ratio"] == 0.0
    assert edge["breaker"] == "half-open"
    assert document["interval_s"] == 2.0
    assert document["errors"] == ["127.0.0.1:9/metrics: refused"] * 2


def test_a_node_all_of_whose_replicas_are_down_says_so() -> None:
    assert topology.node_health([replica("DOWN", None)]) == "DOWN"
    assert topology.node_health([replica("NOT_SERVING", 1), replica("DOWN", None)]) == (
        "NOT_SERVING"
    )


def test_callers_outside_the_mesh_are_a_client_node() -> None:
    text = (
        "# TYPE rpc_server_call_duration_seconds histogram\n"
        'rpc_server_call_duration_seconds_count{mesh_caller="unknown",'
        'rpc_service="shop.catalog.v1.CatalogService",rpc_grpc_status_code="OK"} 3\n'
    )
    found = {"gateway": [Replica("a", text, "SERVING", None)]}
    document = topology.shape(found, topology.scrape_all(found), None)
    assert {n["id"]: n["kind"] for n in document["nodes"]} == {
        "gateway": "service",
        redmetrics.OUTSIDE: "client",
    }
    assert document["edges"][0]["rate"] is None  # one poll: no interval yet
