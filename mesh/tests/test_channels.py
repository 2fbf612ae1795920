"""Channels: one channel per target, all closed together."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.breaker import BreakerConfig
from mesh.channels import Channels
from mesh.interceptors import FaultConfig
from mesh.server import MeshServer, ServerConfig, build_server, start
from mesh.tls import MeshSecurity

PLAINTEXT = MeshSecurity(enabled=False)

TIMEOUT = 10.0
# Targets nothing listens on: creating a channel does not connect.
INVENTORY = "127.0.0.1:1"
PAYMENTS = "dns:///localhost:2"


@pytest.fixture
async def server() -> AsyncIterator[MeshServer]:
    config = ServerConfig("127.0.0.1:0", grace_s=0.0, drain_s=0.0, faults=FaultConfig())
    mesh = build_server(config, ["test.mesh.v1.Probe"])
    try:
        await start(mesh)
        yield mesh
    finally:
        await mesh.server.stop(None)


async def _check(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()
    response: health_pb2.HealthCheckResponse = await stub.Check(request, timeout=TIMEOUT)
    return int(response.status)


async def test_the_same_target_gets_the_same_channel() -> None:
    channels = Channels()
    try:
        first = channels.get(INVENTORY)
        assert channels.get(INVENTORY) is first
        other = channels.get(PAYMENTS)
        assert other is not first
        assert channels.get(PAYMENTS) is other
    finally:
        await channels.close()


async def test_close_shuts_every_channel_down() -> None:
    channels = Channels()
    opened = [channels.get(INVENTORY), channels.get(PAYMENTS)]
    await channels.close(grace=1.0)
    for channel in opened:
        assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN


async def test_a_call_on_a_closed_channel_fails(server: MeshServer) -> None:
    channels = Channels()
    channel = channels.get(f"127.0.0.1:{server.port}")
    assert await _check(channel) == health_pb2.HealthCheckResponse.SERVING
    await channels.close()
    assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN
    with pytest.raises(grpc.aio.UsageError):
        await _check(channel)


async def test_after_close_a_target_gets_a_new_channel() -> None:
    channels = Channels()
    old = channels.get(INVENTORY)
    await channels.close()
    new = channels.get(INVENTORY)
    try:
        assert new is not old
        assert new.get_state() != grpc.ChannelConnectivity.SHUTDOWN
    finally:
        await channels.close()


async def test_closing_twice_is_harmless() -> None:
    channels = Channels()
    channels.get(INVENTORY)
    await channels.close()
    await channels.close()


@pytest.mark.parametrize("service_config", [None, {}])
async def test_calls_reach_a_mesh_server(
    server: MeshServer, service_config: dict[str, object] | None
) -> None:
    # The default service config (round robin, client-side health checking,
    # retries) is accepted by gRPC and works against a server that reports
    # SERVING; an empty one is gRPC's own defaults.
    channels = Channels(service_config=service_config)
    try:
        channel = channels.get(f"127.0.0.1:{server.port}")
        assert await _check(channel) == health_pb2.HealthCheckResponse.SERVING
        await channel.channel_ready()
        assert channel.get_state() == grpc.ChannelConnectivity.READY
    finally:
        await channels.close()


@pytest.mark.parametrize(("service", "name"), [("catalog", "catalog"), (None, "upstream")])
async def test_a_breaker_per_upstream_opens_on_failures_and_never_names_an_address(
    service: str | None, name: str
) -> None:
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there
    channels = Channels(
        security=PLAINTEXT, breaker=BreakerConfig(consecutive_failures=2, open_s=60.0)
    )
    try:
        stub = health_pb2_grpc.HealthStub(channels.get(dead, service))
        details = []
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            details.append(failed.value.details() or "")
        assert not any("circuit breaker" in d for d in details[:2])  # the upstream's own
        assert details[2].startswith(f"circuit breaker for {name} is open")
        assert "127.0.0.1" not in details[2]
        breaker = channels.breaker(dead)
        assert breaker is not None
        assert breaker.rejected == 1
        # Control: without a breaker every call goes out and fails on its own.
        plain = Channels(security=PLAINTEXT)
        stub = health_pb2_grpc.HealthStub(plain.get(dead, service))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert "circuit breaker" not in (failed.value.details() or "")
        assert plain.breaker(dead) is None
        await plain.close()
    finally:
        await channels.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- round_robin over replicas, and client-side health checking ---------------


async def _replica(name: bytes) -> MeshServer:
    """A started server whose Probe/Who answers `name`."""

    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return name

    config = ServerConfig("127.0.0.1:0", grace_s=0.0, drain_s=0.0, faults=FaultConfig())
    mesh = build_server(config, ["test.mesh.v1.Probe"])
    handler = grpc.unary_unary_rpc_method_handler(who)
    mesh.server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.mesh.v1.Probe", {"Who": handler})]
    )
    await start(mesh)
    return mesh


async def _who_answers(channel: grpc.aio.Channel, calls: int) -> set[bytes]:
    who = channel.unary_unary("/test.mesh.v1.Probe/Who", None, None)
    return {await who(b"", timeout=TIMEOUT) for _ in range(calls)}


@pytest.mark.parametrize("health_checked", [True, False])
async def test_a_replica_that_turns_not_serving_gets_no_new_calls(health_checked: bool) -> None:
    first, second = await _replica(b"first"), await _replica(b"second")
    target = f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}"
    # Control: round_robin without the health check keeps calling it.
    config: dict[str, object] | None = None
    if not health_checked:
        config = {"loadBalancingConfig": [{"round_robin": {}}]}
    channels = Channels(security=PLAINTEXT, service_config=config)
    try:
        channel = channels.get(target)
        assert await _who_answers(channel, 20) == {b"first", b"second"}  # both, by one name
        await second.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        seen: set[bytes] = set()
        for _ in range(50):  # the Watch stream brings the change within moments
            seen = await _who_answers(channel, 20)
            if seen == {b"first"}:
                break
        assert seen == ({b"first"} if health_checked else {b"first", b"second"})
    finally:
        await channels.close()
        for replica in (first, second):
            await replica.server.stop(None)
