"""Overload sheds cleanly: a burst past GRPC_MAX_CONCURRENT_RPCS ends in clear statuses.

3,000 calls at once at catalog GetProduct (Python) and at payments GetPayment
(TypeScript), each started as a real process with the limit at 50: every call
ends OK or RESOURCE_EXHAUSTED naming the limit, none CANCELLED, UNKNOWN or
past its deadline, there are some of each, and health says SERVING after.

Why the burst used to end 5-9% CANCELLED, and what the control shows: a
grpc.aio server takes calls from gRPC core one at a time on its event loop; a
burst that arrives faster waits in core's queue of calls not yet taken, and
past `grpc.server.max_pending_requests` (1,000 by default; hard limit 3,000)
core drops a growing share of them at random, before any handler or
interceptor sees them. The client only hears CANCELLED. It is the server's
doing, not the client's: the share is the same on one channel or eight, with
a 5 s or a 30 s deadline, and none is dropped once that queue is raised.
`mesh.server.build_server` raises it whenever the limit is on (every call
taken is then served or shed at once, so the queue drains as fast as the
loop turns); with the limit off (0) the server keeps grpc's defaults, so the
control run below still shows the CANCELLED share on catalog. grpc-js has no
such queue: with the limit off payments answers every call, just later.

Client side, nothing is left to chance: the calls are spread over a few
channels, each its own HTTP/2 connection (`grpc.use_local_subchannel_pool`:
channels with the same arguments otherwise share one), so that no
connection carries more than 1,000 streams; every call has a deadline well
beyond how long the burst takes, so a DEADLINE_EXCEEDED means a call hung,
and the whole burst is bounded again by `asyncio.wait_for`.

The first tests check `mesh.server.ConcurrencyLimit` in process, without a
network beyond loopback; the e2e ones start the services.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localmode.topology import LocalService
from mesh.config import ConfigError, Env
from mesh.interceptors import FaultConfig
from mesh.server import (
    DEFAULT_MAX_CONCURRENT_RPCS,
    ConcurrencyLimit,
    MeshServer,
    ServerConfig,
    build_server,
    start,
)
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.common.v1.common_pb2 import Money
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.conftest import StartStack

CALLS = 3000
LIMIT = 50
CHANNELS = 4  # 750 streams a connection
CALL_TIMEOUT_S = 60.0  # a burst takes a few seconds: reaching this is a hang
BURST_BUDGET_S = 120.0
BUSY = f"server busy: {LIMIT} calls in flight, the limit (GRPC_MAX_CONCURRENT_RPCS)"
NO_TRACING = {"OTEL_SDK_DISABLED": "true"}
# A handler that awaits nothing slow (payments' GetPayment is one synchronous
# SQLite read, catalog's GetProduct one read of its in-memory copy) answers
# before the server takes the next call off the connection: the service
# never has two calls in flight, so a burst queues in the event loop, not in
# the limit. Calls that wait on something (a slow database, an upstream) are
# what fill the limit; the injected delay stands for that wait.
SLOW_CALLS = {"FAULT_DELAY_MS": "200"}
CLEAN = frozenset({"OK", "RESOURCE_EXHAUSTED"})

# --- in process: the interceptor and its configuration ----------------------

ECHO = "test.overload.v1.Echo"
SHAPES = ("Unary", "ClientStream", "ServerStream", "Bidi")


def _echo_handlers(gate: asyncio.Event, entered: list[str]) -> grpc.GenericRpcHandler[Any, Any]:
    """Four shapes, each of which notes its name, then waits at `gate`."""

    async def unary(request: bytes, context: Any) -> bytes:
        entered.append("Unary")
        await gate.wait()
        return request

    async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
        entered.append("ClientStream")
        await gate.wait()
        return b"".join([r async for r in requests])

    async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        entered.append("ServerStream")
        await gate.wait()
        yield request

    async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        entered.append("Bidi")
        await gate.wait()
        async for request in requests:
            yield request

    return grpc.method_handlers_generic_handler(
        ECHO,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )


def _config(limit: int) -> ServerConfig:
    return ServerConfig(
        listen_addr="127.0.0.1:0",
        grace_s=0.0,
        drain_s=0.0,
        faults=FaultConfig(),
        max_concurrent_rpcs=limit,
    )


@dataclass
class Echo:
    """An in-process server with a limit of one call in flight."""

    mesh: MeshServer
    limit: ConcurrencyLimit
    channel: grpc.aio.Channel
    gate: asyncio.Event
    entered: list[str]

    async def call(self, shape: str) -> bytes:
        """One call of `shape`; returns the reply (the last message of a stream)."""
        path, timeout = f"/{ECHO}/{shape}", 10.0
        reply: bytes
        if shape == "Unary":
            reply = await self.channel.unary_unary(path, None, None)(b"x", timeout=timeout)
        elif shape == "ClientStream":
            reply = await self.channel.stream_unary(path, None, None)(iter([b"x"]), timeout=timeout)
        elif shape == "ServerStream":
            call = self.channel.unary_stream(path, None, None)(b"x", timeout=timeout)
            reply = [r async for r in call][-1]
        else:
            bidi = self.channel.stream_stream(path, None, None)(iter([b"x"]), timeout=timeout)
            reply = [r async for r in bidi][-1]
        return reply


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    gate, entered = asyncio.Event(), list[str]()
    mesh = build_server(_config(1), [ECHO])
    assert mesh.limit is not None
    mesh.server.add_generic_rpc_handlers((_echo_handlers(gate, entered),))
    await start(mesh)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}")
    yield Echo(mesh, mesh.limit, channel, gate, entered)
    gate.set()
    await channel.close(None)
    await mesh.server.stop(None)


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_every_shape_past_the_limit_is_shed_and_health_is_not(echo: Echo) -> None:
    limit = echo.limit
    held = asyncio.ensure_future(echo.call("Unary"))
    await _until(lambda: echo.entered == ["Unary"])
    for shape in SHAPES:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo.call(shape)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, shape
        assert (
            caught.value.details()
            == "server busy: 1 calls in flight, the limit (GRPC_MAX_CONCURRENT_RPCS)"
        )
    assert echo.entered == ["Unary"]  # no shed call reached its handler
    assert limit.shed == len(SHAPES)
    health = health_pb2_grpc.HealthStub(echo.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    echo.gate.set()
    assert await held == b"x"  # the accepted call completes
    for shape in SHAPES:  # and each shape gives its place back when it ends
        assert await echo.call(shape) == b"x"
        await _until(lambda: limit.in_flight == 0)


async def test_a_cancelled_call_gives_its_place_back(echo: Echo) -> None:
    limit = echo.limit
    call = echo.channel.unary_unary(f"/{ECHO}/Unary", None, None)(b"x", timeout=10)
    await _until(lambda: limit.in_flight == 1)
    call.cancel()
    await _until(lambda: limit.in_flight == 0)
    echo.gate.set()
    assert await echo.call("Unary") == b"x"


def test_shed_calls_are_logged_once_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limit = ConcurrencyLimit(1, clock=lambda: now[0])
    limit.in_flight = 1
    for _ in range(100):
        limit.shed += 1
        limit._log_shed("/x.Y/Z")
    now[0] += ConcurrencyLimit.LOG_INTERVAL_S
    limit.shed += 1
    limit._log_shed("/x.Y/Z")
    lines = [r.getMessage() for r in caplog.records if r.name == "mesh.server"]
    assert len(lines) == 2, lines
    assert "100 shed" in lines[1], lines


async def test_the_variable_is_a_count_with_zero_for_no_limit() -> None:
    def read(value: str | None) -> int:
        values = {"MESH_MTLS": "off"}
        if value is not None:
            values["GRPC_MAX_CONCURRENT_RPCS"] = value
        return ServerConfig.from_env(Env(values), "0.0.0.0:1").max_concurrent_rpcs

    assert read(None) == DEFAULT_MAX_CONCURRENT_RPCS == 1000
    assert read(" 50 ") == 50
    assert read("0") == 0
    for bad in ("-1", "many", "2.5"):
        with pytest.raises(ConfigError, match=r"^GRPC_MAX_CONCURRENT_RPCS "):
            read(bad)
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit(0)
    assert build_server(_config(0), []).limit is None


# --- e2e: real processes under a burst --------------------------------------

Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Burst:
    codes: Counter[str]
    details: Counter[str]
    seconds: float

    def __str__(self) -> str:
        return f"{dict(self.codes)} in {self.seconds:.1f}s; shed with {dict(self.details)}"


def _channels(service: LocalService) -> list[grpc.aio.Channel]:
    # A local subchannel pool: each channel its own connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [
        grpc.aio.insecure_channel(str(service.grpc_target), options=options)
        for _ in range(CHANNELS)
    ]


async def _burst(calls: Sequence[Call]) -> Burst:
    """Starts every call at once; tallies how each ended."""

    async def one(call: Call) -> tuple[str, str]:
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            return error.code().name, error.details() or ""
        return "OK", ""

    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(one(call) for call in calls)), BURST_BUDGET_S)
    return Burst(
        codes=Counter(code for code, _ in results),
        details=Counter(details for code, details in results if code != "OK"),
        seconds=time.monotonic() - started,
    )


async def _assert_serving(channel: grpc.aio.Channel, service_name: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", service_name):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


async def _catalog_burst(catalog: LocalService) -> Burst:
    channels = _channels(catalog)
    try:
        request = catalog_pb2.GetProductRequest(id="prod-chemex")
        stubs = [catalog_pb2_grpc.CatalogServiceStub(channel) for channel in channels]
        for stub in stubs:  # connected before the burst
            await stub.GetProduct(request, timeout=10)
        burst = await _burst(
            [
                partial(stubs[i % CHANNELS].GetProduct, request, timeout=CALL_TIMEOUT_S)
                for i in range(CALLS)
            ]
        )
        await _assert_serving(channels[0], "shop.catalog.v1.CatalogService")
        assert await stubs[0].GetProduct(request, timeout=10)
        return burst
    finally:
        for channel in channels:
            await channel.close(None)


async def _payments_burst(payments: LocalService) -> Burst:
    channels = _channels(payments)
    try:
        stubs = [payments_pb2_grpc.PaymentsServiceStub(channel) for channel in channels]
        # Charge once (as bench's get_payment does), then read it back.
        charged = await stubs[0].Charge(
            payments_pb2.ChargeRequest(
                idempotency_key="overload",
                order_id="order-overload",
                amount=Money(currency_code="EUR", amount_minor=4950),
                card=payments_pb2.Card(
                    number="4242424242424242",
                    expiry_month=12,
                    expiry_year=datetime.now(UTC).year + 1,
                    cvc="123",
                ),
            ),
            timeout=10,
        )
        request = payments_pb2.GetPaymentRequest(id=charged.payment.id)
        for stub in stubs:
            await stub.GetPayment(request, timeout=10)
        burst = await _burst(
            [
                partial(stubs[i % CHANNELS].GetPayment, request, timeout=CALL_TIMEOUT_S)
                for i in range(CALLS)
            ]
        )
        await _assert_serving(channels[0], "shop.payments.v1.PaymentsService")
        assert await stubs[0].GetPayment(request, timeout=10)
        return burst
    finally:
        for channel in channels:
            await channel.close(None)


def _assert_shed_cleanly(burst: Burst) -> None:
    assert set(burst.codes) <= CLEAN, burst
    assert sum(burst.codes.values()) == CALLS, burst
    assert burst.codes["OK"] > 0, burst
    assert burst.codes["RESOURCE_EXHAUSTED"] > 0, burst
    assert set(burst.details) == {BUSY}, burst


Stack = Callable[[str, dict[str, str]], LocalService]


@pytest.fixture
def stack(start_stack: StartStack) -> Stack:
    """Starts one service, untraced, with `env` added."""

    def one(name: str, env: dict[str, str]) -> LocalService:
        return start_stack([name], env={name: {**NO_TRACING, **env}})[name]

    return one


@pytest.mark.e2e
async def test_catalog_sheds_a_burst_cleanly(stack: Stack) -> None:
    catalog = stack("catalog", {"GRPC_MAX_CONCURRENT_RPCS": str(LIMIT), **SLOW_CALLS})
    burst = await _catalog_burst(catalog)
    print(f"catalog, limit {LIMIT}: {burst}")
    _assert_shed_cleanly(burst)


@pytest.mark.e2e
async def test_payments_sheds_a_burst_cleanly(stack: Stack) -> None:
    payments = stack("payments", {"GRPC_MAX_CONCURRENT_RPCS": str(LIMIT), **SLOW_CALLS})
    burst = await _payments_burst(payments)
    print(f"payments, limit {LIMIT}: {burst}")
    _assert_shed_cleanly(burst)


@pytest.mark.e2e
async def test_control_without_a_limit(stack: Stack) -> None:
    """Limit off: nothing is shed. Catalog typically drops part of the burst
    as CANCELLED instead (gRPC core's queue of calls not yet taken, see the
    module docstring: 106 to 539 of 3,000 in the runs so far), which the
    limit's tests would catch; payments serves every call. CANCELLED is not
    required here, so a faster machine that drops none does not fail."""
    catalog = await _catalog_burst(stack("catalog", {"GRPC_MAX_CONCURRENT_RPCS": "0"}))
    payments = await _payments_burst(
        stack("payments", {"GRPC_MAX_CONCURRENT_RPCS": "0", **SLOW_CALLS})
    )
    print(f"catalog, no limit: {catalog}\npayments, no limit: {payments}")
    assert set(catalog.codes) <= {"OK", "CANCELLED"}, catalog
    assert payments.codes == Counter({"OK": CALLS}), payments
