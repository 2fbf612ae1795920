"""UnexpectedErrors and FaultInjection over a real in-process aio server.

A generic handler with raw-bytes methods stands in for a service; the server
comes from `build_server`, so health and reflection are the ones every
service runs, behind the same interceptor chain.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mesh.interceptors import (
    FaultConfig,
    FaultInjection,
    ServerInterceptor,
    UnexpectedErrors,
    is_infrastructure,
)
from mesh.server import ServerConfig, build_server, start

SERVICE = "test.mesh.v1.Probe"
TIMEOUT = 10.0
Context = grpc.aio.ServicerContext[bytes, bytes]


async def _echo(request: bytes, context: Context) -> bytes:
    return request


async def _boom(request: bytes, context: Context) -> bytes:
    raise RuntimeError("secret database password in a message")


async def _missing(request: bytes, context: Context) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


async def _stream(request: bytes, context: Context) -> AsyncIterator[bytes]:
    for i in range(3):
        yield request + bytes([i])


async def _stream_boom(request: bytes, context: Context) -> AsyncIterator[bytes]:
    yield b"first"
    raise RuntimeError("secret in a stream")


def _handlers() -> grpc.GenericRpcHandler[bytes, bytes]:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Boom": grpc.unary_unary_rpc_method_handler(_boom),
            "Missing": grpc.unary_unary_rpc_method_handler(_missing),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
            "StreamBoom": grpc.unary_stream_rpc_method_handler(_stream_boom),
        },
    )


@asynccontextmanager
async def _served(faults: FaultConfig) -> AsyncIterator[grpc.aio.Channel]:
    config = ServerConfig(listen_addr="127.0.0.1:0", grace_s=0.0, drain_s=0.0, faults=faults)
    mesh = build_server(config, [SERVICE])
    mesh.server.add_generic_rpc_handlers([_handlers()])
    try:
        await start(mesh)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
            yield channel
    finally:
        await mesh.server.stop(None)


@asynccontextmanager
async def _served_with(*interceptors: ServerInterceptor) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers([_handlers()])
    port = server.add_insecure_port("127.0.0.1:0")
    try:
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def _unary(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    # No (de)serializers: requests and responses are raw bytes.
    return channel.unary_unary(f"/{SERVICE}/{method}", None, None)


async def _call(channel: grpc.aio.Channel, method: str, request: bytes = b"ping") -> bytes:
    response: bytes = await _unary(channel, method)(request, timeout=TIMEOUT)
    return response


async def _stream_all(channel: grpc.aio.Channel) -> list[bytes]:
    call = channel.unary_stream(f"/{SERVICE}/Stream", None, None)(b"s", timeout=TIMEOUT)
    return [response async for response in call]


async def _code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    response: health_pb2.HealthCheckResponse = await stub.Check(request, timeout=TIMEOUT)
    return int(response.status)


async def _reflected_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT)]
    return {s.name for r in responses for s in r.list_services_response.service}


async def test_calls_without_faults_pass_through() -> None:
    async with _served(FaultConfig()) as channel:
        assert await _call(channel, "Echo", b"hello") == b"hello"
        assert await _stream_all(channel) == [b"s\x00", b"s\x01", b"s\x02"]


async def test_an_unexpected_error_is_internal_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="mesh.interceptors")
    async with _served(FaultConfig()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Boom")
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.code() != grpc.StatusCode.UNKNOWN
    assert "secret" not in (caught.value.details() or "")
    # The server's log has what the client does not: the method and the trace.
    (record,) = [r for r in caplog.records if r.name == "mesh.interceptors"]
    assert f"/{SERVICE}/Boom" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


async def test_an_unexpected_error_in_a_stream_is_internal() -> None:
    async with _served(FaultConfig()) as channel:
        call = channel.unary_stream(f"/{SERVICE}/StreamBoom", None, None)(b"s", timeout=TIMEOUT)
        received: list[bytes] = []

        async def drain() -> None:
            async for response in call:
                received.append(response)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await drain()
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")


async def test_an_unexpected_error_is_internal_with_only_that_interceptor() -> None:
    async with _served_with(UnexpectedErrors()) as channel:
        assert await _code_of(_call(channel, "Boom")) == grpc.StatusCode.INTERNAL
        assert await _call(channel, "Echo", b"ok") == b"ok"


async def test_a_deliberate_abort_keeps_its_status() -> None:
    async with _served(FaultConfig()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Missing")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing"


async def test_an_unknown_method_is_unimplemented() -> None:
    async with _served(FaultConfig(delay_ms=1, error_percent=100)) as channel:
        assert await _code_of(_call(channel, "NoSuchMethod")) == grpc.StatusCode.UNIMPLEMENTED


async def test_every_call_fails_at_one_hundred_percent() -> None:
    async with _served(FaultConfig(error_percent=100)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Echo")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"/{SERVICE}/Echo" in (caught.value.details() or "")
        assert await _code_of(_stream_all(channel)) == grpc.StatusCode.UNAVAILABLE


async def test_health_and_reflection_are_exempt_from_faults() -> None:
    async with _served(FaultConfig(delay_ms=1, error_percent=100)) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await _health(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
        assert SERVICE in await _reflected_services(channel)
        # Still injected everywhere else.
        assert await _code_of(_call(channel, "Echo")) == grpc.StatusCode.UNAVAILABLE


async def test_delayed_calls_still_succeed() -> None:
    async with _served(FaultConfig(delay_ms=20)) as channel:
        assert await _call(channel, "Echo", b"late") == b"late"
        assert await _stream_all(channel) == [b"s\x00", b"s\x01", b"s\x02"]
        assert await _code_of(_call(channel, "Missing")) == grpc.StatusCode.NOT_FOUND


async def test_a_share_of_calls_fails() -> None:
    # A seeded generator makes the share reproducible.
    faults = FaultInjection(FaultConfig(error_percent=50), rng=random.Random(1))
    async with _served_with(UnexpectedErrors(), faults) as channel:
        codes = []
        for _ in range(40):
            try:
                await _call(channel, "Echo")
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}


@pytest.mark.parametrize(
    ("method", "infrastructure"),
    [
        ("/grpc.health.v1.Health/Check", True),
        ("/grpc.health.v1.Health/Watch", True),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", True),
        ("/shop.catalog.v1.CatalogService/GetProduct", False),
        ("/grpc.healthy.Service/Method", False),
    ],
)
def test_is_infrastructure(method: str, infrastructure: bool) -> None:
    assert is_infrastructure(method) is infrastructure
