"""RED metrics (mesh.metrics) scraped from the real /metrics listener.

Each test starts a server with MESH_METRICS_ADDRESS on a free loopback port,
makes a known number of calls and reads the Prometheus text back: counts
must match exactly per (method, code, caller), or per callee on the client side.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from catalog.config import CatalogConfig
from catalog.server import create_server
from mesh import metrics
from mesh.breaker import BreakerConfig
from mesh.breaker_interceptor import BreakerInterceptor
from mesh.config import ConfigError, Env
from mesh.interceptors import FaultConfig
from mesh.server import MeshServer, ServerConfig, build_server, shut_down, start
from mesh.tests.conftest import Certs
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.metrics_scrape import Samples, scrape, values

SERVICE = "test.mesh.v1.Probe"
TIMEOUT = 10.0
Context = grpc.aio.ServicerContext[bytes, bytes]


async def _scrape(port: int) -> Samples:
    return await asyncio.to_thread(scrape, f"127.0.0.1:{port}", TIMEOUT)


async def _echo(request: bytes, context: Context) -> bytes:
    return request


async def _refuse(request: bytes, context: Context) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no")


async def _slow(request: bytes, context: Context) -> bytes:
    await asyncio.sleep(30)
    return request


async def _stream(request: bytes, context: Context) -> AsyncIterator[bytes]:
    for i in range(3):
        yield bytes([i])


async def _collect(requests: AsyncIterator[bytes], context: Context) -> bytes:
    return b"".join([r async for r in requests])


def _handlers(extra: dict[str, grpc.RpcMethodHandler[bytes, bytes]] | None = None) -> Any:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
            "Slow": grpc.unary_unary_rpc_method_handler(_slow),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
            "Collect": grpc.stream_unary_rpc_method_handler(_collect),
            **(extra or {}),
        },
    )


def _config(faults: FaultConfig | None = None) -> ServerConfig:
    return ServerConfig(
        "127.0.0.1:0",
        0.0,
        0.0,
        faults or FaultConfig(),
        metrics_address="127.0.0.1:0",
        service="probe",
    )


@asynccontextmanager
async def _served(
    config: ServerConfig | None = None,
    extra: dict[str, grpc.RpcMethodHandler[bytes, bytes]] | None = None,
    channel_options: list[tuple[str, object]] | None = None,
) -> AsyncIterator[tuple[MeshServer, grpc.aio.Channel]]:
    mesh = build_server(config or _config(), [SERVICE])
    mesh.server.add_generic_rpc_handlers([_handlers(extra)])
    try:
        await start(mesh)
        target = f"127.0.0.1:{mesh.port}"
        async with grpc.aio.insecure_channel(target, options=channel_options) as channel:
            yield mesh, channel
    finally:
        await shut_down(mesh, config or _config())


def _unary(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{method}", None, None)


async def _code(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    return "OK"


async def _until(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + 8
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


DURATION = "rpc_server_call_duration_seconds_count"


async def test_server_calls_are_counted_per_method_and_code() -> None:
    async with _served() as (mesh, channel):
        assert mesh.metrics is not None
        for _ in range(3):
            assert await _code(_unary(channel, "Echo")(b"x", timeout=TIMEOUT)) == "OK"
        for _ in range(2):
            call = _unary(channel, "Refuse")(b"x", timeout=TIMEOUT)
            assert await _code(call) == "FAILED_PRECONDITION"
        stream = channel.unary_stream(f"/{SERVICE}/Stream", None, None)(b"", timeout=TIMEOUT)
        assert [r async for r in stream] == [b"\x00", b"\x01", b"\x02"]
        collect = channel.stream_unary(f"/{SERVICE}/Collect", None, None)
        assert await collect(iter([b"a", b"b"]), timeout=TIMEOUT) == b"ab"
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert await _code(_unary(channel, "NoSuchMethod")(b"x", timeout=TIMEOUT)) == (
            "UNIMPLEMENTED"
        )
        samples = await _scrape(mesh.metrics.port)

    counts = values(samples, DURATION, "rpc_service", "rpc_method", "rpc_grpc_status_code")
    assert counts == {
        (SERVICE, "Echo", "OK"): 3,
        (SERVICE, "Refuse", "FAILED_PRECONDITION"): 2,
        (SERVICE, "Stream", "OK"): 1,
        (SERVICE, "Collect", "OK"): 1,
        ("grpc.health.v1.Health", "Check", "OK"): 1,
    }
    callers = values(samples, DURATION, "mesh_caller")
    assert callers == {("unknown",): 8}
    buckets = values(samples, "rpc_server_call_duration_seconds_bucket", "rpc_method", "le")
    assert buckets[("Echo", "+Inf")] == 3
    assert buckets[("Echo", "0.0005")] <= buckets[("Echo", "0.001")] <= 3
    assert buckets[("Echo", "10")] == 3  # the last of DURATION_BUCKETS
    assert not samples.get("rpc_server_retry_attempts_total")
    # The resource names the service, as it does for traces.
    (target,) = samples["target_info"]
    assert dict(target)["service_name"] == "probe"


async def test_faulted_cancelled_and_late_calls_are_counted_with_their_code() -> None:
    async with _served(_config(FaultConfig(error_percent=100))) as (mesh, channel):
        assert mesh.metrics is not None
        assert await _code(_unary(channel, "Echo")(b"x", timeout=TIMEOUT)) == "UNAVAILABLE"
        assert await _code(_unary(channel, "Slow")(b"x", timeout=0.2)) == "UNAVAILABLE"
        samples = await _scrape(mesh.metrics.port)
    faulted = values(samples, DURATION, "rpc_method", "rpc_grpc_status_code")
    assert faulted == {("Echo", "UNAVAILABLE"): 1, ("Slow", "UNAVAILABLE"): 1}
    async with _served() as (mesh, channel):
        assert mesh.metrics is not None
        port = mesh.metrics.port
        assert await _code(_unary(channel, "Slow")(b"x", timeout=0.3)) == "DEADLINE_EXCEEDED"
        call = _unary(channel, "Slow")(b"x", timeout=TIMEOUT)
        await asyncio.sleep(0.2)
        call.cancel()

        async def both_counted() -> bool:
            samples = await _scrape(port)
            codes = values(samples, DURATION, "rpc_method", "rpc_grpc_status_code")
            return codes == {("Slow", "DEADLINE_EXCEEDED"): 1, ("Slow", "CANCELLED"): 1}

        await _until(both_counted, "the late and the cancelled call were not both counted")
        samples = await _scrape(port)
    sums = values(samples, "rpc_server_call_duration_seconds_sum", "rpc_grpc_status_code")
    assert sums[("DEADLINE_EXCEEDED",)] > 0.2  # the call's time, not the handler's start


async def test_a_retried_attempt_is_counted_and_grpc_lets_the_header_through() -> None:
    attempts: list[str | None] = []

    async def flaky(request: bytes, context: Context) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        attempts.append(metadata.get(metrics.PREVIOUS_ATTEMPTS_HEADER))
        if len(attempts) == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "first attempt fails")
        return request

    retry = {
        "methodConfig": [
            {
                "name": [{"service": SERVICE}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    options: list[tuple[str, object]] = [
        ("grpc.service_config", json.dumps(retry)),
        ("grpc.enable_retries", 1),
    ]
    handler = grpc.unary_unary_rpc_method_handler(flaky)
    async with _served(extra={"Flaky": handler}, channel_options=options) as (mesh, channel):
        assert mesh.metrics is not None
        assert await _unary(channel, "Flaky")(b"x", timeout=TIMEOUT) == b"x"
        samples = await _scrape(mesh.metrics.port)
    assert attempts == [None, "1"]  # grpc-python's server sees the header
    retries = values(samples, "rpc_server_retry_attempts_total", "rpc_method", "mesh_caller")
    assert retries == {("Flaky", "unknown"): 1}
    codes = values(samples, DURATION, "rpc_method", "rpc_grpc_status_code")
    assert codes == {("Flaky", "UNAVAILABLE"): 1, ("Flaky", "OK"): 1}


async def test_the_caller_is_the_mtls_identity(tmp_path: Path, certs: Certs) -> None:
    server = ServerConfig(
        "127.0.0.1:0",
        0.0,
        0.0,
        FaultConfig(),
        security=certs.security("catalog"),
        metrics_address="127.0.0.1:0",
    )
    config = CatalogConfig(
        server=server,
        db_path=str(tmp_path / "catalog.db"),
        page_token_key=b"k" * 32,
        log_level="INFO",
    )
    catalog = await create_server(config)
    assert catalog.mesh.metrics is not None
    try:
        await start(catalog.mesh)
        key, cert = certs.pair("orders")
        credentials = grpc.ssl_channel_credentials(certs.ca(), key, cert)
        options = [("grpc.ssl_target_name_override", "catalog")]
        target = f"127.0.0.1:{catalog.mesh.port}"
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            for _ in range(2):
                request = catalog_pb2.GetProductRequest(id="no-such-product")
                assert await _code(stub.GetProduct(request, timeout=TIMEOUT)) == "NOT_FOUND"
            # orders may not list products (mesh/policy.yaml): denied, and counted.
            listed = stub.ListProducts(catalog_pb2.ListProductsRequest(), timeout=TIMEOUT)
            assert await _code(listed) == "PERMISSION_DENIED"
        samples = await _scrape(catalog.mesh.metrics.port)
    finally:
        await shut_down(catalog.mesh, server)
        await catalog.store.close()
    counts = values(samples, DURATION, "rpc_method", "rpc_grpc_status_code", "mesh_caller")
    assert counts == {
        ("GetProduct", "NOT_FOUND", "orders"): 2,
        ("ListProducts", "PERMISSION_DENIED", "orders"): 1,
    }
    (target_info,) = samples["target_info"]
    assert dict(target_info)["service_name"] == "catalog"  # from the mesh identity


async def test_client_calls_are_counted_per_callee() -> None:
    async with _served() as (mesh, _):
        assert mesh.metrics is not None
        client = metrics.client_interceptors("probe")
        assert len(client) == 4
        target = f"127.0.0.1:{mesh.port}"
        async with grpc.aio.insecure_channel(target, interceptors=client) as channel:
            for _ in range(3):
                await _unary(channel, "Echo")(b"x", timeout=TIMEOUT)
            assert await _code(_unary(channel, "Refuse")(b"x", timeout=TIMEOUT)) != "OK"
            stream = channel.unary_stream(f"/{SERVICE}/Stream", None, None)(b"", timeout=TIMEOUT)
            assert len([r async for r in stream]) == 3
            collect = channel.stream_unary(f"/{SERVICE}/Collect", None, None)
            await collect(iter([b"a"]), timeout=TIMEOUT)
            port = mesh.metrics.port

            async def counted() -> bool:
                samples = await _scrape(port)
                name = "rpc_client_call_duration_seconds_count"
                counts = values(samples, name, "rpc_method", "rpc_grpc_status_code", "mesh_callee")
                return counts == {
                    ("Echo", "OK", "probe"): 3,
                    ("Refuse", "FAILED_PRECONDITION", "probe"): 1,
                    ("Stream", "OK", "probe"): 1,
                    ("Collect", "OK", "probe"): 1,
                }

            await _until(counted, "the client's calls were not counted as made")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_watched_breaker_exports_its_state_refusals_and_transitions() -> None:
    async with _served() as (mesh, _):
        assert mesh.metrics is not None
        clock = _Clock()
        config = BreakerConfig(consecutive_failures=2, open_s=5.0)
        breaker = BreakerInterceptor("inventory", config, clock)
        metrics.watch_breaker(breaker)
        metrics.watch_breaker(breaker)  # once is enough; twice counts once
        target = f"127.0.0.1:{mesh.port}"
        async with grpc.aio.insecure_channel(target, interceptors=breaker.interceptors()) as ch:
            state = values(await _scrape(mesh.metrics.port), "mesh_breaker_state", "mesh_callee")
            assert state == {("inventory",): 0}
            for _ in range(2):
                assert await _code(_unary(ch, "Slow")(b"x", timeout=0.05)) == "DEADLINE_EXCEEDED"
            for _ in range(3):
                assert await _code(_unary(ch, "Echo")(b"x", timeout=TIMEOUT)) == "UNAVAILABLE"
            samples = await _scrape(mesh.metrics.port)
            assert values(samples, "mesh_breaker_state", "mesh_callee") == {("inventory",): 2}
            rejected = values(samples, "mesh_breaker_rejected_total", "mesh_callee")
            assert rejected == {("inventory",): 3}
            clock.now = 6.0  # half-open; a good probe closes it
            assert await _code(_unary(ch, "Echo")(b"x", timeout=TIMEOUT)) == "OK"
            samples = await _scrape(mesh.metrics.port)
    assert values(samples, "mesh_breaker_state", "mesh_callee") == {("inventory",): 0}
    transitions = values(samples, "mesh_breaker_transitions_total", "mesh_callee", "from", "to")
    assert transitions == {
        ("inventory", "closed", "open"): 1,
        ("inventory", "open", "half_open"): 1,
        ("inventory", "half_open", "closed"): 1,
    }


async def test_metrics_off_without_an_address() -> None:
    config = ServerConfig("127.0.0.1:0", 0.0, 0.0, FaultConfig())
    mesh = build_server(config, [SERVICE])
    assert mesh.metrics is None
    assert metrics.current() is None
    assert metrics.client_interceptors("catalog") == []
    metrics.watch_breaker(BreakerInterceptor("catalog", BreakerConfig()))  # nothing to do
    assert ServerConfig.from_env(Env({"MESH_MTLS": "off"}), "h:1").metrics_address is None


def test_a_malformed_address_names_the_variable() -> None:
    env = Env({"MESH_MTLS": "off", "MESH_METRICS_ADDRESS": "9464"})
    with pytest.raises(ConfigError, match="MESH_METRICS_ADDRESS must be host:port"):
        ServerConfig.from_env(env, "h:1")
    good = Env({"MESH_MTLS": "off", "MESH_METRICS_ADDRESS": "0.0.0.0:9464"})
    assert ServerConfig.from_env(good, "h:1").metrics_address == "0.0.0.0:9464"


async def test_a_busy_port_names_the_variable() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = ServerConfig(
            "127.0.0.1:0", 0.0, 0.0, FaultConfig(), metrics_address=f"127.0.0.1:{port}"
        )
        with pytest.raises(OSError, match=f"MESH_METRICS_ADDRESS=127.0.0.1:{port}"):
            build_server(config, [SERVICE])
