"""The grpc.aio interceptors over a real in-process server and channel.

A generic handler with raw-bytes methods stands in for a service, so the test
needs no generated code; the health and reflection services are the library's
own, as in every service of the mesh.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mesh.server import HealthServicer
from tracing.interceptors import client_interceptors, server_interceptors
from tracing.tests.traced import finished, traced_channel

SERVICE = "test.echo.v1.EchoService"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _missing(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


async def _broken(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await context.abort(grpc.StatusCode.INTERNAL, "database gone")


async def _set_code(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
    context.set_details("not now")
    return b""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    # Synchronous export: the spans are there as soon as a call returns.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
async def channel(provider: TracerProvider) -> AsyncIterator[grpc.aio.Channel]:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Missing": grpc.unary_unary_rpc_method_handler(_missing),
        "SetCode": grpc.unary_unary_rpc_method_handler(_set_code),
        "Broken": grpc.unary_unary_rpc_method_handler(_broken),
    }

    def probes(server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
        reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)

    async with traced_channel(provider, SERVICE, handlers, probes) as channel:
        yield channel


async def _call(channel: grpc.aio.Channel, method: str) -> None:
    # No serializers: the generic handlers take and return raw bytes.
    await channel.unary_unary(f"/{SERVICE}/{method}", None, None)(b"ping", timeout=5)


def _by_kind(spans: Sequence[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    (span,) = [s for s in spans if s.kind == kind]
    return span


def _attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


async def test_client_and_server_spans_share_the_trace_and_link_parent_child(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    await _call(channel, "Echo")

    spans = await finished(exporter, 2)
    client = _by_kind(spans, SpanKind.CLIENT)
    server = _by_kind(spans, SpanKind.SERVER)
    assert server.name == f"/{SERVICE}/Echo"
    assert server.context.trace_id == client.context.trace_id
    # The server span continues the trace from the traceparent metadata.
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert server.parent.is_remote
    assert _attr(server, "rpc.grpc.status_code") == grpc.StatusCode.OK.value[0]
    assert _attr(client, "rpc.grpc.status_code") == grpc.StatusCode.OK.value[0]


async def test_abort_sets_the_status_code_on_the_server_span(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Missing")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    spans = await finished(exporter, 2)
    server = _by_kind(spans, SpanKind.SERVER)
    assert _attr(server, "rpc.grpc.status_code") == grpc.StatusCode.NOT_FOUND.value[0]
    # OpenTelemetry's gRPC conventions: a caller's mistake (NOT_FOUND,
    # INVALID_ARGUMENT, ...) is no server error, so the server span stays
    # UNSET; the client span is ERROR. The code attribute tells them apart.
    assert server.status.status_code == StatusCode.UNSET
    client = _by_kind(spans, SpanKind.CLIENT)
    assert _attr(client, "rpc.grpc.status_code") == grpc.StatusCode.NOT_FOUND.value[0]
    assert client.status.status_code == StatusCode.ERROR


async def test_a_server_fault_marks_the_server_span_as_error(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await _call(channel, "Broken")

    server = _by_kind(await finished(exporter, 2), SpanKind.SERVER)
    assert _attr(server, "rpc.grpc.status_code") == grpc.StatusCode.INTERNAL.value[0]
    assert server.status.status_code == StatusCode.ERROR


async def test_set_code_sets_the_status_code_on_the_server_span(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await _call(channel, "SetCode")

    server = _by_kind(await finished(exporter, 2), SpanKind.SERVER)
    code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert _attr(server, "rpc.grpc.status_code") == code


async def test_health_and_reflection_are_not_traced(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    list_services = reflection_pb2.ServerReflectionRequest(list_services="")
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = [r async for r in info(iter([list_services]), timeout=5)]
    assert responses[0].list_services_response.service  # reflection did answer

    # An RPC that is traced, afterwards: once its two spans are in, any span
    # of the calls above would be in too.
    await _call(channel, "Echo")
    spans = await finished(exporter, 2)
    assert [s.name for s in spans] == [f"/{SERVICE}/Echo"] * 2


async def test_excluded_services_from_the_environment_are_not_traced(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", f"other.Service, {SERVICE}")
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}

    def kept(server: grpc.aio.Server) -> None:
        kept = grpc.method_handlers_generic_handler("test.kept.v1.Kept", handlers)
        server.add_generic_rpc_handlers([kept])

    async with traced_channel(provider, SERVICE, handlers, kept) as channel:
        await _call(channel, "Echo")
        await channel.unary_unary("/test.kept.v1.Kept/Echo", None, None)(b"", timeout=5)

    spans = await finished(exporter, 2)
    assert [s.name for s in spans] == ["/test.kept.v1.Kept/Echo"] * 2


# --- a caller's sampling decision, followed and passed on ---------------------


@pytest.mark.parametrize("sampled", [True, False])
async def test_the_callers_sampling_decision_is_followed_and_passed_to_the_next_hop(
    provider: TracerProvider, exporter: InMemorySpanExporter, sampled: bool
) -> None:
    """caller -> relay (traced server, traced client) -> last hop, which records
    the traceparent it receives: the relay records spans only for a sampled
    caller, and passes the caller's trace id and decision on either way."""
    received: list[str] = []

    async def last_hop(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        received.append(dict(context.invocation_metadata() or ()).get("traceparent", ""))
        return request

    last = grpc.aio.server()
    last.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(last_hop)}
            )
        ]
    )
    last_port = last.add_insecure_port("127.0.0.1:0")
    await last.start()
    onward = grpc.aio.insecure_channel(
        f"127.0.0.1:{last_port}", interceptors=client_interceptors(provider)
    )

    async def relay(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        reply: bytes = await onward.unary_unary(f"/{SERVICE}/Echo", None, None)(request, timeout=5)
        return reply

    middle = grpc.aio.server(interceptors=server_interceptors(provider))
    middle.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE, {"Relay": grpc.unary_unary_rpc_method_handler(relay)}
            )
        ]
    )
    middle_port = middle.add_insecure_port("127.0.0.1:0")
    await middle.start()
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = f"00-{trace_id}-{parent}-{'01' if sampled else '00'}"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{middle_port}") as channel:
            relayed = channel.unary_unary(f"/{SERVICE}/Relay", None, None)
            await relayed(b"ping", timeout=5, metadata=(("traceparent", traceparent),))
    finally:
        await onward.close(None)
        await middle.stop(None)
        await last.stop(None)

    [passed_on] = received
    _, passed_trace, passed_parent, flags = passed_on.split("-")
    assert passed_trace == trace_id  # the caller's trace, whatever its decision
    assert flags == ("01" if sampled else "00")
    spans = await finished(exporter, 2) if sampled else exporter.get_finished_spans()
    if sampled:
        server, client = _by_kind(spans, SpanKind.SERVER), _by_kind(spans, SpanKind.CLIENT)
        assert format(server.context.trace_id, "032x") == trace_id
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == parent
        assert passed_parent == format(client.context.span_id, "016x")
    else:
        assert spans == ()  # nothing recorded for an unsampled caller
        # No span, not even a non-recording one: the relay passes its caller's
        # context on as it came, as W3C allows a participant that records nothing.
        assert passed_parent == parent
