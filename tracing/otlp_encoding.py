"""OTLP trace export requests written straight to the protobuf wire format.

Why not opentelemetry-exporter-otlp-proto-common's encoder, which the OTLP
exporter uses: it builds a protobuf object for every span, attribute and
value and then serializes them, about 25 µs per server span here, in the
batch processor's thread, which holds the GIL the event loop needs
meanwhile. bench/tracing.md measured exporting as half of what a sampled
call adds to catalog's CPU. Writing the bytes directly takes about a
quarter of that, and a service's spans repeat a few attributes (rpc.system,
rpc.service, ...), whose encoded bytes are kept.

It writes exactly what the library's encoder serializes, field for field
and in the same order, so the two are interchangeable (the tests compare
their bytes for spans of every shape the SDK makes). A value it has no
exact rule for (a type the library logs and skips, an integer beyond int64)
raises `Unsupported`, and `LeanOTLPSpanExporter` then encodes that batch
with the library.

Field numbers are OTLP's (opentelemetry/proto/trace/v1/trace.proto and
common/v1/common.proto).
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext

__all__ = ["LeanOTLPSpanExporter", "Unsupported", "encode_request"]

_FIXED32 = struct.Struct("<I").pack
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_INT64 = range(-(2**63), 2**63)
# Span.flags: whether the parent's remoteness is known (always), and is remote.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
# Encoded KeyValue messages by (key, value, type of value); past this many a
# service is making attribute values up per call, and caching them would not pay.
_MAX_CACHED = 4096
_key_values: dict[tuple[str, object, type], bytes] = {}


class Unsupported(Exception):
    """A value this encoder writes no exact equivalent of; the library encodes the batch."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, text: str | None) -> bytes:
    """A string field, left out when empty (proto3's default)."""
    return _field(number, text.encode()) if text else b""


def _count(number: int, count: int) -> bytes:
    """A uint32 count, left out when zero."""
    return _varint(number << 3) + _varint(count) if count else b""


def _any_value(value: Any) -> bytes:
    """An AnyValue message; its oneof is written even when it holds a default."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, int):
        if value not in _INT64:
            raise Unsupported(f"{value} does not fit an int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items())
        return _field(6, pairs)
    raise Unsupported(f"no rule for a {type(value).__name__} value")


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue message; kept for the scalar values that spans repeat."""
    if not isinstance(value, (str, bool, int, float)):
        return _field(1, key.encode()) + _field(2, _any_value(value))
    cache_key = (key, value, type(value))
    encoded = _key_values.get(cache_key)
    if encoded is None:
        encoded = _field(1, key.encode()) + _field(2, _any_value(value))
        if len(_key_values) < _MAX_CACHED:
            _key_values[cache_key] = encoded
    return encoded


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    return b"".join(_field(number, _key_value(key, value)) for key, value in attributes.items())


def _flags(context: SpanContext | None) -> bytes:
    remote = _IS_REMOTE if context is not None and context.is_remote else 0
    return _FIXED32(_HAS_IS_REMOTE | remote)


def _event(event: Event) -> bytes:
    return b"".join(
        (
            b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b"",
            _text(2, event.name),
            _attributes(3, event.attributes),
            _count(4, event.dropped_attributes),
        )
    )


def _link(link: Link) -> bytes:
    context = link.context
    return b"".join(
        (
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
            _attributes(4, link.attributes),
            _count(5, link.dropped_attributes),
            b"\x35" + _flags(context),
        )
    )


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big")]
    parts += [b"\x12\x08", context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        parts.append(_text(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    if span.parent is not None:
        parts += [b"\x22\x08", span.parent.span_id.to_bytes(8, "big")]
    parts.append(_text(5, span.name))
    parts += [b"\x30", _varint(span.kind.value + 1)]  # OTLP's kinds start at 1
    if span.start_time:
        parts += [b"\x39", _FIXED64(span.start_time)]
    if span.end_time:
        parts += [b"\x41", _FIXED64(span.end_time)]
    parts.append(_attributes(9, span.attributes))
    parts.append(_count(10, span.dropped_attributes))
    parts += [_field(11, _event(event)) for event in span.events]
    parts.append(_count(12, span.dropped_events))
    parts += [_field(13, _link(link)) for link in span.links]
    parts.append(_count(14, span.dropped_links))
    status = span.status
    code = status.status_code.value
    parts.append(
        _field(15, _text(2, status.description) + (b"\x18" + _varint(code) if code else b""))
    )
    parts += [b"\x85\x01", _flags(span.parent)]
    return b"".join(parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    return _text(1, scope.name) + _text(2, scope.version) + _attributes(3, scope.attributes)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ExportTraceServiceRequest of `spans`, grouped by resource,
    then by instrumentation scope, in the order they first appear, as the
    library's encoder groups them. Raises Unsupported as the module says."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]]
    grouped = defaultdict(lambda: defaultdict(list))
    for span in spans:
        grouped[span.resource][span.instrumentation_scope or None].append(_span(span))
    request = []
    for resource, scopes in grouped.items():
        scope_spans = b"".join(
            _field(
                2,
                _field(1, _scope(scope))
                + b"".join(_field(2, encoded) for encoded in encoded_spans)
                + _text(3, scope.schema_url if scope is not None else None),
            )
            for scope, encoded_spans in scopes.items()
        )
        body = _field(1, _attributes(1, resource.attributes)) + scope_spans
        request.append(_field(1, body + _text(3, resource.schema_url)))
    return b"".join(request)


class LeanOTLPSpanExporter(OTLPSpanExporter):
    """The OTLP gRPC exporter (its transport, retries and settings unchanged),
    whose requests `encode_request` writes."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        # The exporter's hook for building the request (pinned version; the
        # tests send through it to a real Jaeger). Parsing the bytes back costs
        # a fraction of a microsecond per span, in C.
        try:
            return ExportTraceServiceRequest.FromString(encode_request(data))
        except Unsupported:
            return encode_spans(data)
