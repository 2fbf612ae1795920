"""Jaeger's OTLP/JSON trace to waterfall rows: parents first, relative times."""

from __future__ import annotations

from typing import Any

from console import waterfall
from tracing.model import parse_trace

TRACE = "0af7651916cd43dd8448eb211c80319c"


def span(
    span_id: str, parent: str | None, name: str, start_ms: int, end_ms: int, **extra: Any
) -> dict[str, Any]:
    base = 1_700_000_000_000_000_000
    raw: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": name,
        "kind": 2,
        "startTimeUnixNano": str(base + start_ms * 1_000_000),
        "endTimeUnixNano": str(base + end_ms * 1_000_000),
    }
    if parent:
        raw["parentSpanId"] = parent
    raw.update(extra)
    return raw


def document(*services: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "result": {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": name}}]
                    },
                    "scopeSpans": [{"spans": spans}],
                }
                for name, spans in services
            ]
        }
    }


def checkout() -> dict[str, Any]:
    return document(
        ("gateway", [span("a1", None, "PlaceOrder", 0, 40)]),
        (
            "orders",
            [
                span("b1", "a1", "PlaceOrder", 2, 38),
                span("b3", "b1", "Charge", 20, 30),
                span("b2", "b1", "ReserveStock", 5, 15),
            ],
        ),
        (
            "payments",
            [
                span(
                    "c1",
                    "b3",
                    "Charge",
                    21,
                    29,
                    status={"code": 2, "message": "card declined"},
                    events=[
                        {
                            "name": "exception",
                            "timeUnixNano": str(1_700_000_000_000_000_000 + 25_000_000),
                            "attributes": [
                                {"key": "exception.type", "value": {"stringValue": "Declined"}}
                            ],
                        }
                    ],
                )
            ],
        ),
        ("notifications", [span("d1", "zz", "Consume", 50, 52)]),  # its parent never arrived
    )


def test_rows_put_each_span_after_its_parent_children_in_start_order() -> None:
    rows = waterfall.rows(parse_trace(checkout(), TRACE))
    assert [(r["span_id"], r["depth"]) for r in rows] == [
        ("a1", 0),
        ("b1", 1),
        ("b2", 2),
        ("b3", 2),
        ("c1", 3),
        ("d1", 0),
    ]
    by_id = {r["span_id"]: r for r in rows}
    assert by_id["b2"]["parent_id"] == "b1"
    assert by_id["d1"]["parent_id"] is None  # shown as a root, not dropped
    assert (by_id["b3"]["start_ms"], by_id["b3"]["duration_ms"]) == (20.0, 10.0)
    assert by_id["c1"]["service"] == "payments"
    assert by_id["c1"]["status"] == "ERROR"
    assert by_id["c1"]["status_message"] == "card declined"
    assert by_id["c1"]["events"] == [
        {"name": "exception", "time_ms": 25.0, "attributes": {"exception.type": "Declined"}}
    ]


def test_a_summary_names_the_root_services_duration_and_errors() -> None:
    summary = waterfall.summary(parse_trace(checkout(), TRACE))
    assert summary["root_service"] == "gateway"
    assert summary["root_name"] == "PlaceOrder"
    assert summary["services"] == ["gateway", "notifications", "orders", "payments"]
    assert summary["duration_ms"] == 52.0
    assert summary["span_count"] == 6
    assert summary["error"] is True
    assert summary["start"].endswith("Z")
