"""build_server, start and shut_down over a real in-process server.

The order matters to a load balancer: health turns NOT_SERVING first, the
server keeps answering while it drains, and calls in flight finish within
the grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mesh.interceptors import (
    Continuation,
    FaultConfig,
    Handler,
    ServerInterceptor,
)
from mesh.server import MeshServer, ServerConfig, build_server, shut_down, start

SERVICE = "test.mesh.v1.Probe"
OTHER_SERVICE = "test.mesh.v1.Other"
TIMEOUT = 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


class Arrivals(ServerInterceptor):
    """Tells the test when a call has reached the server."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        if handler_call_details.method == f"/{SERVICE}/Echo":
            self.arrived.set()
        return await continuation(handler_call_details)


def _config(*, drain_s: float = 0.0, grace_s: float = 0.0, delay_ms: int = 0) -> ServerConfig:
    return ServerConfig(
        listen_addr="127.0.0.1:0",
        grace_s=grace_s,
        drain_s=drain_s,
        faults=FaultConfig(delay_ms=delay_ms),
    )


@asynccontextmanager
async def _running(
    config: ServerConfig, *interceptors: ServerInterceptor
) -> AsyncIterator[tuple[MeshServer, grpc.aio.Channel]]:
    mesh = build_server(config, [SERVICE, OTHER_SERVICE], interceptors)
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    mesh.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    try:
        await start(mesh)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
            yield mesh, channel
    finally:
        await mesh.server.stop(None)


async def _check(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    response: health_pb2.HealthCheckResponse = await stub.Check(request, timeout=TIMEOUT)
    return int(response.status)


async def _echo_call(channel: grpc.aio.Channel, request: bytes) -> bytes:
    echo = channel.unary_unary(f"/{SERVICE}/Echo", None, None)
    response: bytes = await echo(request, timeout=TIMEOUT)
    return response


async def test_build_server_binds_a_free_port_and_registers_the_services() -> None:
    async with _running(_config()) as (mesh, channel):
        assert mesh.port > 0
        assert mesh.service_names == (SERVICE, OTHER_SERVICE)
        assert await _echo_call(channel, b"hi") == b"hi"
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT)]
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert {SERVICE, OTHER_SERVICE, "grpc.health.v1.Health"} <= names


async def test_start_reports_serving_for_the_server_and_each_service() -> None:
    async with _running(_config()) as (_, channel):
        for service in ("", SERVICE, OTHER_SERVICE):
            assert await _check(channel, service) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _check(channel, "test.mesh.v1.Unknown")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_turns_not_serving_while_the_server_drains() -> None:
    config = _config(drain_s=1.0, grace_s=1.0)
    async with _running(config) as (mesh, channel):
        stopping = asyncio.create_task(shut_down(mesh, config))
        try:
            # An answer at all shows the server still serves while it drains.
            services = ("", SERVICE, OTHER_SERVICE)
            for _ in range(1000):
                statuses = [await _check(channel, service) for service in services]
                if statuses == [NOT_SERVING] * len(services):
                    break
                await asyncio.sleep(0.001)
            else:
                pytest.fail(f"health never reported NOT_SERVING for all of {services}")
        finally:
            await stopping
        # Stopped: nothing answers any more.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _check(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_call_in_flight_completes_during_shutdown() -> None:
    # The injected delay keeps the call in flight once it has arrived.
    config = _config(drain_s=0.0, grace_s=30.0, delay_ms=300)
    arrivals = Arrivals()
    async with _running(config, arrivals) as (mesh, channel):
        call = asyncio.create_task(_echo_call(channel, b"slow"))
        await asyncio.wait_for(arrivals.arrived.wait(), TIMEOUT)
        await shut_down(mesh, config)
        assert await call == b"slow"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _echo_call(channel, b"too late")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_shutdown_without_drain_or_grace() -> None:
    config = _config()
    async with _running(config) as (mesh, channel):
        assert await _check(channel) == SERVING
        await shut_down(mesh, config)
        with pytest.raises(grpc.aio.AioRpcError):
            await _check(channel)
