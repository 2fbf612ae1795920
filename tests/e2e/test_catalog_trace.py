"""End to end with the real Jaeger: a grpcurl call's trace arrives in Jaeger.

Jaeger and catalog run as processes on ports of their own; grpcurl calls
catalog through server reflection with a W3C `traceparent` the test chose, and
the test polls Jaeger's query API until the server span is there.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable

import pytest

from localmode.topology import LocalService
from tests.conftest import JAEGER, require_tool
from tracing.jaeger import has_span, wait_for_trace

pytestmark = pytest.mark.e2e

# (grpcurl method, request JSON, expected rpc.grpc.status_code)
CALLS = [
    ("GetProduct", '{"id": "prod-chemex"}', 0),
    ("GetProduct", '{"id": "prod-missing"}', 5),  # NOT_FOUND
    ("SearchProducts", '{"query": ""}', 3),  # INVALID_ARGUMENT
]


@pytest.fixture
def mesh(start_stack: Callable[..., dict[str, LocalService]]) -> dict[str, LocalService]:
    require_tool(JAEGER)
    # A short batch delay so spans reach Jaeger quickly; the poll is bounded anyway.
    return start_stack(["jaeger", "catalog"], env={"catalog": {"OTEL_BSP_SCHEDULE_DELAY": "200"}})


@pytest.mark.parametrize(("method", "body", "code"), CALLS)
def test_server_span_in_jaeger(
    mesh: dict[str, LocalService], grpcurl: str, method: str, body: str, code: int
) -> None:
    catalog, jaeger = mesh["catalog"], mesh["jaeger"]
    assert catalog.grpc_target is not None
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    result = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-H",
            f"traceparent: 00-{trace_id}-{parent_id}-01",
            "-d",
            body,
            catalog.grpc_target,
            f"shop.catalog.v1.CatalogService/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode == 0) == (code == 0), result.stderr
    operation = f"/shop.catalog.v1.CatalogService/{method}"
    trace = wait_for_trace(
        trace_id,
        timeout_s=30,
        predicate=has_span("catalog", operation),
        base_url=f"http://127.0.0.1:{jaeger.ports[16686]}",
    )
    assert trace.trace_id == trace_id
    span = next(s for s in trace.spans if s.service == "catalog")
    assert span.operation == operation
    assert span.kind == "SERVER"
    assert span.parent_span_id == parent_id, "the server span must continue the caller's trace"
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == "shop.catalog.v1.CatalogService"
    assert span.attributes["rpc.method"] == method
    assert span.attributes["rpc.grpc.status_code"] == code


def test_health_checks_are_not_traced(mesh: dict[str, LocalService], grpcurl: str) -> None:
    """Probes run every few seconds; tracing them would bury the real traffic."""
    catalog, jaeger = mesh["catalog"], mesh["jaeger"]
    assert catalog.grpc_target is not None
    probe_trace, call_trace = secrets.token_hex(16), secrets.token_hex(16)
    for trace_id, method, body in (
        (probe_trace, "grpc.health.v1.Health/Check", "{}"),
        (call_trace, "shop.catalog.v1.CatalogService/GetProduct", '{"id": "prod-chemex"}'),
    ):
        subprocess.run(
            [grpcurl, "-plaintext", "-H", f"traceparent: 00-{trace_id}-{secrets.token_hex(8)}-01",
             "-d", body, catalog.grpc_target, method],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{jaeger.ports[16686]}"
    # Once the later call's span is in, the earlier probe's would be too.
    wait_for_trace(call_trace, timeout_s=30, predicate=has_span("catalog"), base_url=base_url)
    with pytest.raises(TimeoutError):
        wait_for_trace(probe_trace, timeout_s=1, base_url=base_url)
