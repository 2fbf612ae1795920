"""Parsing of an API v3 answer and the tree view, on a hand-made answer.

The answer below has the shape Jaeger v1.76.0 really sends (checked against
the running binary): OTLP/JSON with hex ids, string nanoseconds, numeric
enums, zero-valued fields left out, and an empty ``status`` for UNSET.
"""

from __future__ import annotations

from typing import Any

import pytest

from tracing.model import parse_trace
from tracing.tree import format_tree

TID = "326e3cf377ea483d905b670048ba4794"
GATEWAY_SERVER = "1000000000000001"
GATEWAY_CLIENT = "1000000000000002"
ORDERS_SERVER = "2000000000000001"
ORPHAN = "3000000000000001"


def _resource(service: str) -> dict[str, Any]:
    return {
        "attributes": [
            {"key": "service.name", "value": {"stringValue": service}},
            {"key": "service.version", "value": {"stringValue": "0.1.0"}},
        ]
    }


def _span(span_id: str, name: str, start_ms: int, end_ms: int, **extra: Any) -> dict[str, Any]:
    base = 1_700_000_000_000_000_000
    return {
        "traceId": TID,
        "spanId": span_id,
        "flags": 256,
        "name": name,
        "startTimeUnixNano": str(base + start_ms * 1_000_000),
        "endTimeUnixNano": str(base + end_ms * 1_000_000),
        "status": {},
        **extra,
    }


def _grpc_code(code: int) -> dict[str, Any]:
    return {"key": "rpc.grpc.status_code", "value": {"intValue": str(code)}}


RESPONSE: dict[str, Any] = {
    "result": {
        "resourceSpans": [
            {
                # Jaeger groups by resource; the orders spans come first here
                # on purpose, the parser must order by start time itself.
                "resource": _resource("orders"),
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.grpc"},
                        "spans": [
                            _span(
                                ORDERS_SERVER,
                                "/shop.orders.v1.OrdersService/PlaceOrder",
                                3,
                                9,
                                parentSpanId=GATEWAY_CLIENT,
                                kind=2,
                                status={"code": 2, "message": "no such product"},
                                attributes=[_grpc_code(5)],
                            ),
                            _span(ORPHAN, "outbox.publish", 10, 11, parentSpanId="9" * 16),
                        ],
                    }
                ],
            },
            {
                "resource": _resource("gateway"),
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.grpc"},
                        "spans": [
                            _span(
                                GATEWAY_CLIENT,
                                "/shop.orders.v1.OrdersService/PlaceOrder",
                                2,
                                10,
                                parentSpanId=GATEWAY_SERVER,
                                kind=3,
                                status={"code": 2},
                                attributes=[_grpc_code(5)],
                            ),
                            _span(
                                GATEWAY_SERVER,
                                "/shop.gateway.v1.GatewayService/Checkout",
                                0,
                                12,
                                kind=2,
                                attributes=[
                                    _grpc_code(0),
                                    {"key": "rpc.system", "value": {"stringValue": "grpc"}},
                                    {"key": "retry", "value": {"boolValue": True}},
                                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                                    {
                                        "key": "tags",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"intValue": "2"}]
                                            }
                                        },
                                    },
                                ],
                            ),
                            # Another trace's span must not leak into this one.
                            {**_span("4000000000000001", "other", 0, 1), "traceId": "f" * 32},
                        ],
                    }
                ],
            },
        ]
    }
}


def test_parse_reads_ids_services_kinds_status_and_times() -> None:
    trace = parse_trace(RESPONSE, TID)

    assert [s.span_id for s in trace.spans] == [
        GATEWAY_SERVER,
        GATEWAY_CLIENT,
        ORDERS_SERVER,
        ORPHAN,
    ]
    root = trace.spans[0]
    assert root.trace_id == TID
    assert root.parent_span_id is None
    assert (root.service, root.kind, root.status_code) == ("gateway", "SERVER", "UNSET")
    assert root.duration_ns == 12_000_000
    assert root.start_unix_nano == 1_700_000_000_000_000_000
    orders = trace.span(ORDERS_SERVER)
    assert orders is not None
    assert (orders.service, orders.parent_span_id) == ("orders", GATEWAY_CLIENT)
    assert (orders.status_code, orders.status_message) == ("ERROR", "no such product")
    # A span with no "kind" field is UNSPECIFIED (zero values are left out).
    assert trace.spans[3].kind == "UNSPECIFIED"


def test_parse_converts_attribute_values_to_python_types() -> None:
    root = parse_trace(RESPONSE, TID).spans[0]

    assert root.attributes == {
        "rpc.grpc.status_code": 0,
        "rpc.system": "grpc",
        "retry": True,
        "ratio": 0.5,
        "tags": '["a", 2]',
    }


def test_parse_accepts_bare_traces_data_and_enum_names() -> None:
    span = _span(
        GATEWAY_SERVER, "op", 0, 1, kind="SPAN_KIND_CLIENT", status={"code": "STATUS_CODE_OK"}
    )
    document = {
        "resourceSpans": [{"resource": _resource("svc"), "scopeSpans": [{"spans": [span]}]}]
    }

    (parsed,) = parse_trace(document, TID).spans

    assert (parsed.kind, parsed.status_code) == ("CLIENT", "OK")


def test_edges_and_roots() -> None:
    trace = parse_trace(RESPONSE, TID)
    checkout = ("gateway", "/shop.gateway.v1.GatewayService/Checkout")
    place_client = ("gateway", "/shop.orders.v1.OrdersService/PlaceOrder")
    place_server = ("orders", "/shop.orders.v1.OrdersService/PlaceOrder")

    assert trace.edges() == {(checkout, place_client), (place_client, place_server)}
    assert [s.span_id for s in trace.roots()] == [GATEWAY_SERVER, ORPHAN]
    assert trace.services() == {"gateway", "orders"}


def test_format_tree_nests_children_and_shows_grpc_codes() -> None:
    assert format_tree(parse_trace(RESPONSE, TID)) == "\n".join(
        [
            f"trace {TID}: 4 spans, 2 services, 12.00 ms",
            "gateway /shop.gateway.v1.GatewayService/Checkout SERVER UNSET grpc=OK(0) 12.00 ms",
            "└─ gateway /shop.orders.v1.OrdersService/PlaceOrder CLIENT ERROR"
            " grpc=NOT_FOUND(5) 8.00 ms",
            "   └─ orders /shop.orders.v1.OrdersService/PlaceOrder SERVER ERROR"
            " grpc=NOT_FOUND(5) 6.00 ms",
            f"orders outbox.publish UNSPECIFIED UNSET 1.00 ms (parent {'9' * 16} missing)",
        ]
    )


def test_format_tree_uses_branch_connectors_for_siblings() -> None:
    spans = [
        _span("a" * 16, "root", 0, 10),
        _span("b" * 16, "first", 1, 2, parentSpanId="a" * 16),
        _span("c" * 16, "second", 3, 4, parentSpanId="a" * 16),
        _span("d" * 16, "nested", 3, 4, parentSpanId="b" * 16),
    ]
    document = {"resourceSpans": [{"resource": _resource("s"), "scopeSpans": [{"spans": spans}]}]}

    lines = format_tree(parse_trace(document, TID)).splitlines()[1:]

    assert [line.split(" UNSPECIFIED")[0] for line in lines] == [
        "s root",
        "├─ s first",
        "│  └─ s nested",
        "└─ s second",
    ]


@pytest.mark.parametrize("document", [{}, {"result": {}}, {"result": {"resourceSpans": []}}])
def test_an_empty_answer_is_an_empty_trace(document: dict[str, Any]) -> None:
    trace = parse_trace(document, TID)

    assert trace.spans == ()
    assert format_tree(trace) == f"trace {TID}: 0 spans, 0 services"
