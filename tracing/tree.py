"""A trace as an indented parent -> child tree, one line per span.

    trace 4bf92f3577b34da6a3ce929d0e0e4736: 3 spans, 2 services, 12.41 ms
    gateway /shop.gateway.v1.GatewayService/Checkout SERVER OK grpc=OK(0) 12.41 ms
    └─ gateway /shop.orders.v1.OrdersService/PlaceOrder CLIENT ERROR grpc=NOT_FOUND(5) 9.80 ms
       └─ orders /shop.orders.v1.OrdersService/PlaceOrder SERVER ERROR grpc=NOT_FOUND(5) 9.02 ms

Children are ordered by start time. A span whose parent is not in the trace
(not exported, or not arrived yet) is shown as a root and marked, because a
broken edge is usually what one is looking for.
"""

from __future__ import annotations

from tracing.model import Span, Trace

__all__ = ["format_span", "format_tree"]

# gRPC status codes by number (grpc/doc/statuscodes.md); kept here so this
# module needs no grpc import.
_GRPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


def _grpc_code(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(_GRPC_CODES):
        return f"{_GRPC_CODES[value]}({value})"
    return str(value)


def format_span(span: Span) -> str:
    """service, operation, kind, status, the gRPC code when recorded, and duration."""
    parts = [span.service, span.operation, span.kind, span.status_code]
    if "rpc.grpc.status_code" in span.attributes:
        parts.append(f"grpc={_grpc_code(span.attributes['rpc.grpc.status_code'])}")
    parts.append(f"{span.duration_ns / 1e6:.2f} ms")
    return " ".join(parts)


def format_tree(trace: Trace) -> str:
    """The whole trace, a header line then one line per span; no trailing newline."""
    by_parent: dict[str | None, list[Span]] = {}
    for span in trace.spans:  # already in start order, so children stay ordered
        by_parent.setdefault(span.parent_span_id, []).append(span)
    roots = trace.roots()
    if trace.spans:
        start = min(s.start_unix_nano for s in trace.spans)
        end = max(s.start_unix_nano + s.duration_ns for s in trace.spans)
        took = f", {(end - start) / 1e6:.2f} ms"
    else:
        took = ""
    lines = [
        f"trace {trace.trace_id}: {len(trace.spans)} spans, {len(trace.services())} services{took}"
    ]
    seen: set[str] = set()

    def walk(span: Span, prefix: str, connector: str, child_prefix: str) -> None:
        if span.span_id in seen:  # duplicate ids would otherwise loop forever
            return
        seen.add(span.span_id)
        line = prefix + connector + format_span(span)
        if span.parent_span_id is not None and span in roots:
            line += f" (parent {span.parent_span_id} missing)"
        lines.append(line)
        children = by_parent.get(span.span_id, [])
        for i, child in enumerate(children):
            last = i == len(children) - 1
            walk(
                child,
                child_prefix,
                "└─ " if last else "├─ ",
                child_prefix + ("   " if last else "│  "),
            )

    for root in roots:
        walk(root, "", "", "")
    return "\n".join(lines)
