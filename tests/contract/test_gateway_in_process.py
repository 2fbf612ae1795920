"""The gateway's typed handlers and its spans, over real gRPC, with the gateway in this process.

The gateway process of test_gateway_contract.py has no descriptor for the
test-only Echo service, so every Echo call there takes the bidirectional
handler. Here the gateway is built with `create_server` and told Echo's
shapes, so each of the four shapes takes its own handler (as the shop's
services do, whose descriptors the gateway imports), and its tracer provider
is an in-memory one the tests read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.cancellation import capture, capture_interceptors
from gateway.config import GatewayConfig
from gateway.contracts import Shape, contract_shapes
from gateway.server import GatewayServer, create_server
from mesh.config import Env
from mesh.server import start
from tests.contract.gateway_support import (
    API_KEY,
    BASE_ENV,
    CLIENT_OPTIONS,
    ECHO,
    FAILURE_DETAILS,
    TIMEOUT,
    EchoUpstream,
    bearer,
    echo_method,
    pairs,
    until,
    write_routes,
)
from tracing.interceptors import client_interceptors, server_interceptors


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    upstream = EchoUpstream().start()
    yield upstream
    upstream.stop()


ECHO_SHAPES = {
    "Unary": Shape(False, False),
    "ServerStream": Shape(False, True),
    "ClientStream": Shape(True, False),
    "Bidi": Shape(True, True),
    "Slow": Shape(False, False),
}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def in_process(
    echo: EchoUpstream, tmp_path: Path, exporter: InMemorySpanExporter
) -> AsyncIterator[grpc.aio.Channel]:
    """A gateway in this process that knows Echo's shapes, traced into `exporter`."""
    routes = write_routes(
        tmp_path / "routes.yaml", [{"service": ECHO, "upstream": echo.target, "auth": "none"}]
    )
    env = {**BASE_ENV, "GRPC_LISTEN_ADDR": "127.0.0.1:0", "GATEWAY_ROUTES_FILE": str(routes)}
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def shapes(service: str) -> Mapping[str, Shape] | None:
        return ECHO_SHAPES if service == ECHO else contract_shapes(service)

    server: GatewayServer = await create_server(
        GatewayConfig.from_env(Env(env)),
        server_interceptors(provider),
        client_interceptors(provider),
        shapes,
    )
    await start(server.mesh)
    try:
        target = f"127.0.0.1:{server.mesh.port}"
        async with grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS) as channel:
            yield channel
    finally:
        await server.mesh.server.stop(None)
        await server.channels.close()


async def test_typed_handlers_carry_every_shape(in_process: grpc.aio.Channel) -> None:
    channel = in_process

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"a", b"b"):
            yield part

    call = echo_method(channel, "Unary")(b"u", timeout=TIMEOUT)
    assert await call == b"u"
    assert ("x-echo-trailer", "t") in pairs(await call.trailing_metadata())
    stream = channel.unary_stream(f"/{ECHO}/ServerStream", None, None)(b"s", timeout=TIMEOUT)
    assert [m async for m in stream] == [b"s#0", b"s#1", b"s#2"]
    collected = channel.stream_unary(f"/{ECHO}/ClientStream", None, None)
    assert await collected(parts(), timeout=TIMEOUT) == b"a|b"
    bidi = channel.stream_stream(f"/{ECHO}/Bidi", None, None)(parts(), timeout=TIMEOUT)
    assert [m async for m in bidi] == [b"echo:a", b"echo:b"]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await echo_method(channel, "Unary")(b"fail", timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("grpc-status-details-bin", FAILURE_DETAILS) in pairs(error.value.trailing_metadata())


async def test_typed_handlers_pass_deadlines_and_cancellations(
    in_process: grpc.aio.Channel, echo: EchoUpstream
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await echo_method(in_process, "Slow")(b"z", timeout=0.5)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    seen = echo.calls(f"/{ECHO}/Slow")[-1]
    assert seen.time_remaining is not None
    # grpc-timeout travels in coarse units and the clocks differ: a little slack.
    assert 0 < seen.time_remaining <= 0.5 + 0.1
    before = len(echo.calls(f"/{ECHO}/Slow"))
    call = echo_method(in_process, "Slow")(b"z")
    calls = await until(lambda: echo.calls(f"/{ECHO}/Slow")[before:])
    call.cancel()
    await until(lambda: calls[0].cancelled)


async def test_server_span_carries_the_identity_and_parents_the_client_span(
    in_process: grpc.aio.Channel, exporter: InMemorySpanExporter, echo: EchoUpstream
) -> None:
    await echo_method(in_process, "Unary")(b"t", metadata=bearer(API_KEY), timeout=TIMEOUT)
    spans: tuple[ReadableSpan, ...] = await until(
        lambda: len(exporter.get_finished_spans()) >= 2 and exporter.get_finished_spans()
    )
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    client = next(s for s in spans if s.kind == SpanKind.CLIENT)
    assert server.parent is None
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert (server.attributes or {}).get("enduser.id") == "cus-key"
    traceparent = str(echo.calls(f"/{ECHO}/Unary")[-1].values("traceparent")[0])
    assert traceparent.split("-")[2] == f"{client.context.span_id:016x}"


@pytest.mark.parametrize("shape", ["unary_unary", "stream_unary"])
async def test_both_unary_response_shapes_are_captured_for_cancellation(
    echo: EchoUpstream, shape: str
) -> None:
    """grpc.aio registers an interceptor object for one call shape only: each
    shape the gateway must be able to cancel upstream has its own."""
    method = f"/{ECHO}/{'Unary' if shape == 'unary_unary' else 'ClientStream'}"
    async with grpc.aio.insecure_channel(echo.target, interceptors=capture_interceptors()) as ch:
        captured = capture()
        request: Any = b"x" if shape == "unary_unary" else iter([b"x"])
        await getattr(ch, shape)(method, None, None)(request, timeout=TIMEOUT)
    assert len(captured) == 1
