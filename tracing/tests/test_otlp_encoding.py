"""tracing.otlp_encoding writes byte for byte what the library's OTLP encoder
serializes, for spans of every shape the SDK makes, and hands what it cannot
write exactly back to the library."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AnyValue

from tracing.otlp_encoding import LeanOTLPSpanExporter, Unsupported, encode_request

# Every attribute value type the SDK keeps, defaults and extremes included.
VALUES: dict[str, AnyValue] = {
    "text": "shop.catalog.v1.CatalogService",
    "empty": "",
    "unicode": "café ☕",
    "yes": True,
    "no": False,
    "zero": 0,
    "negative": -42,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "float": 0.125,
    "float zero": 0.0,
    "words": ("a", "", "b"),
    "numbers": (1, -2, 3),
    "floats": (1.5, -0.0),
    "flags": (True, False),
    "none yet": (),
}


def _provider(
    exporter: InMemorySpanExporter, service: str, limits: SpanLimits | None = None
) -> TracerProvider:
    resource = Resource.create({"service.name": service, "service.version": "1.2.3"})
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def spans() -> list[ReadableSpan]:
    """Spans of two services and three scopes: roots and children, every kind,
    remote parents with and without trace state, events, links, statuses,
    every attribute type, and counts of what the limits dropped."""
    exporter = InMemorySpanExporter()
    catalog, orders = _provider(exporter, "catalog"), _provider(exporter, "orders")
    limited = _provider(
        exporter, "catalog", SpanLimits(max_attributes=2, max_events=1, max_links=1)
    )
    grpc_scope = catalog.get_tracer("shopmesh.tracing.grpc", "0.1.0")
    other_scope = catalog.get_tracer("shopmesh.other", schema_url="https://example.com/s")
    bare_scope = orders.get_tracer("")
    remote = propagate.extract(
        {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "shop=1,mesh=two"}
    )
    plain_remote = propagate.extract({"traceparent": f"00-{'12' * 16}-{'34' * 8}-01"})

    for kind in SpanKind:
        with grpc_scope.start_as_current_span(f"/svc/{kind.name}", kind=kind) as parent:
            parent.set_attributes(VALUES)
            with grpc_scope.start_as_current_span("child") as child:
                child.add_event("breaker opened", {"mesh.callee": "payments", "failures": 5})
                child.add_event("")
                child.set_status(Status(StatusCode.ERROR, "upstream unavailable"))
    for parent_context in (remote, plain_remote):
        with other_scope.start_as_current_span("served", parent_context, kind=SpanKind.SERVER):
            pass
    link_to = trace.get_current_span(remote).get_span_context()
    with bare_scope.start_as_current_span(
        "linked", links=[Link(link_to, {"why": "retry"}), Link(link_to)]
    ) as span:
        span.set_status(Status(StatusCode.OK))
    unnamed = bare_scope.start_span("")
    unnamed.end()
    with limited.get_tracer("limited").start_as_current_span(
        "over the limits", links=[Link(link_to), Link(link_to)]
    ) as span:
        span.set_attributes({"a": 1, "b": 2, "c": 3})
        span.add_event("one")
        span.add_event("two")
    return list(exporter.get_finished_spans())


def test_the_bytes_are_the_librarys(spans: list[ReadableSpan]) -> None:
    # Two services (two providers of catalog's, equal resources, group as one)
    # and four scopes interleaved: the grouping must match too.
    assert len({span.resource for span in spans}) == 2
    assert len({span.instrumentation_scope for span in spans}) == 4
    assert encode_request(spans) == encode_spans(spans).SerializeToString()


@pytest.mark.parametrize("count", [1, 2, 50])
def test_each_batch_size(spans: list[ReadableSpan], count: int) -> None:
    batch = (spans * 50)[:count]
    assert encode_request(batch) == encode_spans(batch).SerializeToString()


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_request([]) == b""
    assert encode_spans([]).SerializeToString() == b""


def test_the_exporter_sends_the_same_request(spans: list[ReadableSpan]) -> None:
    exporter = LeanOTLPSpanExporter(endpoint="127.0.0.1:1", insecure=True)
    try:
        assert exporter._translate_data(spans) == encode_spans(spans)
    finally:
        exporter.shutdown()


def _span_with(value: object) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = _provider(exporter, "catalog")
    span = provider.get_tracer("t").start_span("odd")
    # Past the SDK's own checks, as a processor or a future SDK could leave it.
    span._attributes._dict["odd"] = value  # type: ignore[attr-defined]
    span.end()
    return exporter.get_finished_spans()[0]


@pytest.mark.parametrize(
    "value", [None, {"a": 1, "nested": {"b": ("x", 2.5)}}, [1, None], b"\x00\xff"]
)
def test_values_past_the_sdks_checks_are_written_as_the_library_writes_them(
    value: object,
) -> None:
    span = _span_with(value)
    assert encode_request([span]) == encode_spans([span]).SerializeToString()


@pytest.mark.parametrize("value", [2**64, object()])
def test_what_it_cannot_write_goes_to_the_library(
    value: object, caplog: pytest.LogCaptureFixture
) -> None:
    span = _span_with(value)
    with pytest.raises(Unsupported):
        encode_request([span])

    exporter = LeanOTLPSpanExporter(endpoint="127.0.0.1:1", insecure=True)
    try:
        with caplog.at_level(logging.ERROR):
            request = exporter._translate_data([span])
    finally:
        exporter.shutdown()
    # The library's way: the attribute it cannot encode is left out, and logged.
    assert request == encode_spans([span])
    attributes = request.resource_spans[0].scope_spans[0].spans[0].attributes
    assert [attribute.key for attribute in attributes] == []
