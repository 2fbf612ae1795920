"""MESH_HEALTH_PROBE_ADDRESS: a plaintext port with nothing but health, whose
answers follow the main port's through start and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import ConfigError, Env
from mesh.interceptors import FaultConfig
from mesh.server import ServerConfig, build_server, shut_down, start

SERVICE = "test.mesh.v1.Probe"
TIMEOUT = 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _config(drain_s: float = 0.0) -> ServerConfig:
    return ServerConfig(
        listen_addr="127.0.0.1:0",
        grace_s=0.0,
        drain_s=drain_s,
        faults=FaultConfig(),
        health_probe_address="127.0.0.1:0",
    )


async def _check(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    response: health_pb2.HealthCheckResponse = await stub.Check(request, timeout=TIMEOUT)
    return int(response.status)


async def test_the_probe_port_serves_health_and_nothing_else() -> None:
    mesh = build_server(_config(), [SERVICE])
    assert mesh.probe is not None
    assert mesh.probe.port not in (0, mesh.port)
    await start(mesh)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.probe.port}") as channel:
            assert await _check(channel) == SERVING
            other = channel.unary_unary(f"/{SERVICE}/Echo", None, None)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await other(b"hi", timeout=TIMEOUT)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await shut_down(mesh, _config())


async def test_the_probe_port_says_not_serving_through_the_drain_then_closes() -> None:
    config = _config(drain_s=1.0)
    mesh = build_server(config, [SERVICE])
    assert mesh.probe is not None
    await start(mesh)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.probe.port}") as channel:
        assert await _check(channel) == SERVING
        stopping = asyncio.create_task(shut_down(mesh, config))
        try:
            for _ in range(1000):
                if await _check(channel) == NOT_SERVING:
                    break
                await asyncio.sleep(0.001)
            else:
                pytest.fail("the probe port never said NOT_SERVING during the drain")
        finally:
            await stopping
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _check(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_without_the_variable_there_is_no_probe_port() -> None:
    config = ServerConfig.from_env(Env({"MESH_MTLS": "off"}), "127.0.0.1:0")
    assert config.health_probe_address is None
    mesh = build_server(config, [SERVICE])
    try:
        assert mesh.probe is None
    finally:
        await mesh.server.stop(None)


def test_the_variable_is_read_and_a_bad_value_names_it() -> None:
    env = Env({"MESH_MTLS": "off", "MESH_HEALTH_PROBE_ADDRESS": "0.0.0.0:8086"})
    assert ServerConfig.from_env(env, "127.0.0.1:0").health_probe_address == "0.0.0.0:8086"
    bad = Env({"MESH_MTLS": "off", "MESH_HEALTH_PROBE_ADDRESS": "no-port"})
    with pytest.raises(ConfigError, match="MESH_HEALTH_PROBE_ADDRESS"):
        ServerConfig.from_env(bad, "127.0.0.1:0")


async def test_a_probe_port_that_cannot_be_bound_fails_start_up_naming_the_variable() -> None:
    first = build_server(_config(), [SERVICE])
    assert first.probe is not None
    taken = dataclasses.replace(_config(), health_probe_address=f"127.0.0.1:{first.probe.port}")
    try:
        with pytest.raises(OSError, match="MESH_HEALTH_PROBE_ADDRESS"):
            build_server(taken, [SERVICE])
    finally:
        await first.server.stop(None)
        await first.probe.server.stop(None)
