"""A trace as waterfall rows: each span after its parent, children in start
order, times relative to the trace's first span (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tracing.model import Span, Trace


def rows(trace: Trace) -> list[dict[str, Any]]:
    """Depth-first from the roots; a span whose parent is not in the trace
    (not exported yet, or lost) is a root of its own, so no span is dropped."""
    if not trace.spans:
        return []
    origin = min(s.start_unix_nano for s in trace.spans)
    ids = {s.span_id for s in trace.spans}
    children: dict[str | None, list[Span]] = {}
    for span in trace.spans:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda s: (s.start_unix_nano, s.span_id))
    out: list[dict[str, Any]] = []
    stack = [(root, 0) for root in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        out.append(_row(span, depth, origin, parent_known=span.parent_span_id in ids))
        stack.extend((child, depth + 1) for child in reversed(children.get(span.span_id, [])))
    return out


def _row(span: Span, depth: int, origin: int, *, parent_known: bool) -> dict[str, Any]:
    return {
        "span_id": span.span_id,
        "parent_id": span.parent_span_id if parent_known else None,
        "depth": depth,
        "service": span.service,
        "name": span.operation,
        "kind": span.kind.lower(),
        "start_ms": (span.start_unix_nano - origin) / 1e6,
        "duration_ms": span.duration_ns / 1e6,
        "status": span.status_code,
        "status_message": span.status_message,
        "attributes": dict(span.attributes),
        "events": [
            {
                "name": event.name,
                "time_ms": (event.time_unix_nano - origin) / 1e6,
                "attributes": dict(event.attributes),
            }
            for event in span.events
        ],
    }


def duration_ms(trace: Trace) -> float:
    if not trace.spans:
        return 0.0
    start = min(s.start_unix_nano for s in trace.spans)
    end = max(s.start_unix_nano + s.duration_ns for s in trace.spans)
    return (end - start) / 1e6


def summary(trace: Trace) -> dict[str, Any]:
    """One line of the recent traces: its root, services, duration, errors."""
    roots = trace.roots()
    root = roots[0] if roots else trace.spans[0]
    seconds, nanos = divmod(min(s.start_unix_nano for s in trace.spans), 1_000_000_000)
    start = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "trace_id": trace.trace_id,
        "root_service": root.service,
        "root_name": root.operation,
        "start": f"{start}.{nanos // 1_000_000:03d}Z",
        "duration_ms": duration_ms(trace),
        "span_count": len(trace.spans),
        "services": sorted(trace.services()),
        "error": any(s.status_code == "ERROR" for s in trace.spans),
    }
