"""A small synchronous client of Jaeger's query API v3, and a text view of a trace.

``GET /api/v3/traces/{trace_id}`` is Jaeger v2's documented HTTP API; it
answers ``{"result": {"resourceSpans": [...]}}`` in OTLP/JSON (ids in hex,
64-bit integers as strings, enums as numbers) and 404 for an unknown trace.
``GET /api/v3/traces?query.service_name=...`` (``find_traces``) searches by
service, span name and start time, and answers the same way (404: none);
it has no attribute filter, so callers filter the traces it returns.
Span, Trace and format_tree are re-exported so that one import serves for
fetching and inspecting traces. Only the standard library is used, so test
and benchmark tools can import this without the gRPC stack.

The base URL is an argument; without it JAEGER_QUERY_URL, else
http://127.0.0.1:16686.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tracing.model import Span, Trace, parse_trace, parse_traces
from tracing.tree import format_tree

__all__ = [
    "DEFAULT_QUERY_URL",
    "JaegerError",
    "Span",
    "SpanMatcher",
    "Trace",
    "find_traces",
    "format_tree",
    "get_trace",
    "has_span",
    "query_url",
    "rfc3339",
    "wait_for_trace",
]

DEFAULT_QUERY_URL = "http://127.0.0.1:16686"


class JaegerError(Exception):
    """Jaeger could not be reached, or answered with something other than a trace or a 404."""


def query_url(base_url: str | None = None) -> str:
    """The query API base URL: the argument, else JAEGER_QUERY_URL, else the default."""
    return (base_url or os.environ.get("JAEGER_QUERY_URL") or DEFAULT_QUERY_URL).rstrip("/")


def _normalise_trace_id(trace_id: str) -> str:
    # W3C form: 32 lowercase hex digits. Shorter ids are left-padded the way
    # Jaeger itself pads them, so "abc" and its padded form are the same trace.
    value = trace_id.strip().lower()
    if not value or len(value) > 32 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not a trace id (up to 32 hex digits): {trace_id!r}")
    return value.rjust(32, "0")


def get_trace(
    trace_id: str, *, base_url: str | None = None, timeout_s: float = 5.0
) -> Trace | None:
    """The trace with this id, or None when Jaeger does not know it (yet).

    Raises ValueError for a malformed id and JaegerError when Jaeger is
    unreachable or answers anything but a trace or a 404.
    """
    tid = _normalise_trace_id(trace_id)
    document = _get(f"/api/v3/traces/{tid}", base_url, timeout_s)
    if document is None:
        return None
    trace = parse_trace(document, tid)
    # A 200 with no span of this id is treated like a 404: nothing to show yet.
    return trace if trace.spans else None


def find_traces(
    service: str,
    *,
    start_min_ns: int,
    start_max_ns: int,
    operation: str | None = None,
    limit: int = 20,
    base_url: str | None = None,
    timeout_s: float = 5.0,
) -> list[Trace]:
    """Traces holding a span of ``service`` (named ``operation``, if given) that
    started between the two times (ns since the epoch), earliest first; at most
    ``limit``. Each trace is whole, not only its matching spans.

    Raises JaegerError as ``get_trace`` does.
    """
    params = {
        "query.service_name": service,
        "query.start_time_min": rfc3339(start_min_ns),
        "query.start_time_max": rfc3339(start_max_ns),
        "query.num_traces": str(limit),
    }
    if operation is not None:
        params["query.operation_name"] = operation
    document = _get(f"/api/v3/traces?{urllib.parse.urlencode(params)}", base_url, timeout_s)
    return [] if document is None else parse_traces(document)


def rfc3339(unix_ns: int) -> str:
    """RFC 3339 with nanoseconds, as the query API parses it (Go's time.RFC3339Nano)."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def _get(path: str, base_url: str | None, timeout_s: float) -> Mapping[str, Any] | None:
    """The JSON document at ``path`` of the query API, or None for a 404."""
    url = f"{query_url(base_url)}{path}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        detail = exc.read(500).decode("utf-8", "replace").strip()
        raise JaegerError(f"Jaeger answered {exc.code} for {url}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JaegerError(f"cannot reach Jaeger at {query_url(base_url)}: {reason}") from exc
    try:
        document: Mapping[str, Any] = json.loads(body)
    except ValueError as exc:
        raise JaegerError(f"Jaeger sent a body that is not JSON for {url}") from exc
    return document


class SpanMatcher:
    """A predicate on a trace that says, for a TimeoutError, what it was waiting for."""

    def __init__(self, description: str, test: Callable[[Trace], bool]) -> None:
        self.description = description
        self._test = test

    def __call__(self, trace: Trace) -> bool:
        return self._test(trace)

    def __repr__(self) -> str:
        return self.description


def has_span(service: str, operation: str | None = None) -> SpanMatcher:
    """True once the trace holds a span of ``service`` (with ``operation``, if given)."""

    def test(trace: Trace) -> bool:
        return any(
            s.service == service and (operation is None or s.operation == operation)
            for s in trace.spans
        )

    what = f"a span of service {service!r}" + (f" named {operation!r}" if operation else "")
    return SpanMatcher(what, test)


def _describe(trace: Trace) -> str:
    names = sorted({f"{s.service}:{s.operation}" for s in trace.spans})
    return f"{len(trace.spans)} spans ({', '.join(names)})"


def wait_for_trace(
    trace_id: str,
    *,
    timeout_s: float,
    predicate: Callable[[Trace], bool] | None = None,
    base_url: str | None = None,
    interval_s: float = 0.2,
) -> Trace:
    """Poll until the trace exists and ``predicate`` holds; at most ``timeout_s`` seconds.

    Spans reach Jaeger asynchronously (batch export on the sender, a batch
    processor in Jaeger), and a trace's spans from different services arrive
    at different times: hence a predicate such as ``has_span("orders")``.
    An unreachable Jaeger counts as "not yet" (it may be starting) until the
    deadline. Raises TimeoutError naming what was still missing.
    """
    deadline = time.monotonic() + timeout_s
    last: Trace | None = None
    last_error: JaegerError | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            last = get_trace(trace_id, base_url=base_url, timeout_s=max(0.1, min(5.0, remaining)))
            last_error = None
        except JaegerError as exc:
            last_error = exc
        if last is not None and (predicate is None or predicate(last)):
            return last
        if time.monotonic() + interval_s > deadline:
            break
        time.sleep(interval_s)
    where = query_url(base_url)
    if last_error is not None:
        raise TimeoutError(f"trace {trace_id} not fetched within {timeout_s}s: {last_error}")
    if last is None:
        raise TimeoutError(f"trace {trace_id} not found in Jaeger at {where} within {timeout_s}s")
    raise TimeoutError(
        f"trace {trace_id} still lacks {predicate!r} after {timeout_s}s; it has {_describe(last)}"
    )
