"""Typed traces and spans, parsed from the OTLP/JSON that Jaeger's API v3 returns.

OTLP/JSON differs from protobuf's canonical JSON in ways that matter here:
trace and span ids are hex strings, 64-bit integers (timestamps, ``intValue``)
are decimal strings, and enums (span kind, status code) are numbers. Fields
equal to their zero value are left out, so every lookup has a default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "AttributeValue",
    "Span",
    "SpanEvent",
    "StatusCode",
    "Trace",
    "parse_trace",
    "parse_traces",
]

AttributeValue = str | int | float | bool
StatusCode = Literal["UNSET", "OK", "ERROR"]

# Index = the OTLP enum number (opentelemetry-proto trace.proto).
_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUSES: tuple[StatusCode, ...] = ("UNSET", "OK", "ERROR")


@dataclass(frozen=True)
class SpanEvent:
    """Something that happened during a span (an exception, a retry), at a time in ns."""

    name: str
    time_unix_nano: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """One span; ids are lowercase hex, times in nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    operation: str
    kind: str
    start_unix_nano: int
    duration_ns: int
    status_code: StatusCode
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    status_message: str = ""
    events: tuple[SpanEvent, ...] = ()


@dataclass(frozen=True)
class Trace:
    """A trace's spans, ordered by start time."""

    trace_id: str
    spans: tuple[Span, ...]

    def span(self, span_id: str) -> Span | None:
        return next((s for s in self.spans if s.span_id == span_id), None)

    def roots(self) -> list[Span]:
        """Spans without a parent in this trace (a lost parent makes a span a root too)."""
        ids = {s.span_id for s in self.spans}
        return [s for s in self.spans if s.parent_span_id not in ids]

    def children(self, span_id: str) -> list[Span]:
        return [s for s in self.spans if s.parent_span_id == span_id]

    def services(self) -> set[str]:
        return {s.service for s in self.spans}

    def edges(self) -> set[tuple[tuple[str, str], tuple[str, str]]]:
        """Parent -> child pairs as ((service, operation), (service, operation)).

        Tests of traces assert on these edges rather than on span counts,
        which change with retries and instrumentation details.
        """
        by_id = {s.span_id: s for s in self.spans}
        return {
            ((p.service, p.operation), (s.service, s.operation))
            for s in self.spans
            if s.parent_span_id is not None and (p := by_id.get(s.parent_span_id)) is not None
        }


def _value(raw: Mapping[str, Any]) -> Any:
    """An OTLP AnyValue as a plain Python value (lists and dicts for the composite kinds)."""
    if "stringValue" in raw:
        return str(raw["stringValue"])
    if "boolValue" in raw:
        return bool(raw["boolValue"])
    if "intValue" in raw:
        return int(raw["intValue"])
    if "doubleValue" in raw:
        return float(raw["doubleValue"])
    if "bytesValue" in raw:
        return str(raw["bytesValue"])  # base64, as sent
    if "arrayValue" in raw:
        return [_value(v) for v in raw["arrayValue"].get("values", [])]
    if "kvlistValue" in raw:
        return {
            kv["key"]: _value(kv.get("value", {})) for kv in raw["kvlistValue"].get("values", [])
        }
    return ""


def _attributes(raw: Sequence[Mapping[str, Any]]) -> dict[str, AttributeValue]:
    result: dict[str, AttributeValue] = {}
    for item in raw:
        value = _value(item.get("value", {}))
        # Arrays and maps are kept as compact JSON text so the type stays flat.
        result[item["key"]] = (
            value if isinstance(value, str | int | float | bool) else json.dumps(value)
        )
    return result


def _enum(raw: object, names: Sequence[str], prefix: str) -> str:
    # Numbers per the OTLP/JSON spec; names (e.g. "SPAN_KIND_SERVER") are
    # accepted too because protobuf's canonical JSON uses them.
    if isinstance(raw, int) and 0 <= raw < len(names):
        return names[raw]
    if isinstance(raw, str) and raw.removeprefix(prefix) in names:
        return raw.removeprefix(prefix)
    return names[0]


def _status_code(raw: object) -> StatusCode:
    name = _enum(raw, _STATUSES, "STATUS_CODE_")
    return "OK" if name == "OK" else "ERROR" if name == "ERROR" else "UNSET"


def _span(raw: Mapping[str, Any], service: str) -> Span:
    start = int(raw.get("startTimeUnixNano", 0))
    end = int(raw.get("endTimeUnixNano", start))
    status = raw.get("status", {})
    return Span(
        trace_id=str(raw["traceId"]).lower(),
        span_id=str(raw["spanId"]).lower(),
        parent_span_id=str(raw["parentSpanId"]).lower() if raw.get("parentSpanId") else None,
        service=service,
        operation=str(raw.get("name", "")),
        kind=_enum(raw.get("kind", 0), _KINDS, "SPAN_KIND_"),
        start_unix_nano=start,
        duration_ns=max(0, end - start),
        status_code=_status_code(status.get("code", 0)),
        attributes=_attributes(raw.get("attributes", [])),
        status_message=str(status.get("message", "")),
        events=tuple(
            SpanEvent(
                name=str(event.get("name", "")),
                time_unix_nano=int(event.get("timeUnixNano", start)),
                attributes=_attributes(event.get("attributes", [])),
            )
            for event in raw.get("events", [])
        ),
    )


def _spans(document: Mapping[str, Any]) -> list[Span]:
    data = document.get("result", document)
    spans: list[Span] = []
    for resource_spans in data.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            spans.extend(_span(raw, service) for raw in scope_spans.get("spans", []))
    spans.sort(key=lambda s: (s.start_unix_nano, s.span_id))
    return spans


def parse_trace(document: Mapping[str, Any], trace_id: str) -> Trace:
    """The spans of ``trace_id`` in an API v3 answer (or in bare OTLP/JSON TracesData)."""
    return Trace(
        trace_id=trace_id, spans=tuple(s for s in _spans(document) if s.trace_id == trace_id)
    )


def parse_traces(document: Mapping[str, Any]) -> list[Trace]:
    """Every trace in an answer that holds several (a search), earliest first."""
    by_id: dict[str, list[Span]] = {}
    for span in _spans(document):  # in start order, so the traces come out in it too
        by_id.setdefault(span.trace_id, []).append(span)
    return [Trace(trace_id=tid, spans=tuple(spans)) for tid, spans in by_id.items()]
