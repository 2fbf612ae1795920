"""The span interceptors on every call shape, and on calls whose trace is not sampled.

Streams end their spans when the stream ends, with the stream's status; an
unsampled caller gets no span on either side, whatever the shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import context, propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tracing.interceptors import client_interceptors
from tracing.tests.traced import finished, traced_channel

SERVICE = "test.shapes.v1.Shapes"
UNSAMPLED = (("traceparent", f"00-{'12' * 16}-{'34' * 8}-00"),)


async def _count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for index in range(3):
        yield bytes([index])


async def _count_then_fail(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"\x00"
    await context.abort(grpc.StatusCode.UNAVAILABLE, "gone mid-stream")


async def _sum(requests: AsyncIterator[bytes], context: Any) -> bytes:
    total = 0
    async for request in requests:
        total += len(request)
    return bytes([total])


async def _echo_each(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def channel(exporter: InMemorySpanExporter) -> AsyncIterator[grpc.aio.Channel]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handlers = {
        "Count": grpc.unary_stream_rpc_method_handler(_count),
        "CountThenFail": grpc.unary_stream_rpc_method_handler(_count_then_fail),
        "Sum": grpc.stream_unary_rpc_method_handler(_sum),
        "EchoEach": grpc.stream_stream_rpc_method_handler(_echo_each),
    }
    async with traced_channel(provider, SERVICE, handlers) as channel:
        yield channel


async def _spans(exporter: InMemorySpanExporter, count: int) -> dict[SpanKind, ReadableSpan]:
    return {span.kind: span for span in await finished(exporter, count)}


def _code(span: ReadableSpan) -> Any:
    assert span.attributes is not None
    return span.attributes.get("rpc.grpc.status_code")


async def _requests() -> AsyncIterator[bytes]:
    for chunk in (b"a", b"bc"):
        yield chunk


async def test_a_server_stream_is_one_span_a_side_ending_with_its_status(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    call = channel.unary_stream(f"/{SERVICE}/Count", None, None)(b"", timeout=5)
    assert [r async for r in call] == [b"\x00", b"\x01", b"\x02"]

    spans = await _spans(exporter, 2)
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert server.name == client.name == f"/{SERVICE}/Count"
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert _code(server) == _code(client) == grpc.StatusCode.OK.value[0]


async def test_a_stream_that_fails_midway_records_its_code_on_both_spans(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    call = channel.unary_stream(f"/{SERVICE}/CountThenFail", None, None)(b"", timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [r async for r in call]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    spans = await _spans(exporter, 2)
    for span in spans.values():
        assert _code(span) == grpc.StatusCode.UNAVAILABLE.value[0]
        assert span.status.status_code == StatusCode.ERROR  # a server fault, on both sides


@pytest.mark.parametrize("method", ["Sum", "EchoEach"])
async def test_client_and_bidirectional_streams_are_traced(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter, method: str
) -> None:
    if method == "Sum":
        assert (
            await channel.stream_unary(f"/{SERVICE}/Sum", None, None)(_requests(), timeout=5)
            == b"\x03"
        )
    else:
        call = channel.stream_stream(f"/{SERVICE}/EchoEach", None, None)(_requests(), timeout=5)
        assert [r async for r in call] == [b"a", b"bc"]

    spans = await _spans(exporter, 2)
    assert {s.name for s in spans.values()} == {f"/{SERVICE}/{method}"}
    assert _code(spans[SpanKind.SERVER]) == grpc.StatusCode.OK.value[0]


async def test_an_unsampled_caller_gets_no_span_on_any_shape(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    # The caller runs inside a trace whose decision was "not sampled".
    token = context.attach(propagate.extract(dict(UNSAMPLED)))
    try:
        stream = channel.unary_stream(f"/{SERVICE}/Count", None, None)(b"", timeout=5)
        assert len([r async for r in stream]) == 3
        total = channel.stream_unary(f"/{SERVICE}/Sum", None, None)
        assert await total(_requests(), timeout=5) == b"\x03"
    finally:
        context.detach(token)

    await asyncio.sleep(0.1)  # any span would have ended by now
    assert exporter.get_finished_spans() == ()


async def test_the_context_replaces_a_traceparent_the_caller_passed_along(
    exporter: InMemorySpanExporter,
) -> None:
    """A proxy forwards its client's metadata: the next hop must see one
    traceparent, the proxy's client span's, not the client's as well."""
    received: list[list[str]] = []

    async def last_hop(request: bytes, context: Any) -> bytes:
        received.append([v for k, v in context.invocation_metadata() or () if k == "traceparent"])
        return request

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = grpc.aio.server()
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(last_hop)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    forwarded = (("traceparent", f"00-{'56' * 16}-{'78' * 8}-01"),)
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client_interceptors(provider)
        ) as channel:
            await channel.unary_unary(f"/{SERVICE}/Echo", None, None)(
                b"", timeout=5, metadata=forwarded
            )
    finally:
        await server.stop(None)

    [[traceparent]] = received
    (client,) = exporter.get_finished_spans()
    assert traceparent.split("-")[2] == format(client.context.span_id, "016x")
