"""Deadline propagation over real in-process servers: client -> relay -> upstream.

The relay stands in for orders: its handler calls the upstream (payments)
from a task it shields, as orders' checkout drives its saga, so the call to
the upstream outlives the handler when the client gives up. (A handler that
awaits an outgoing call directly has it cancelled with itself by grpc.aio;
through OpenTelemetry's client interceptor or a shielded task it does not.)
Only the deadline then stops the upstream: with `DeadlineScope` on the relay's
server and `DeadlinePropagation` on its channel, the upstream's call carries
the client's deadline and is cancelled by it; without them (the control) it
has no deadline and runs to its end.

Bounds are loose on purpose: the machine is noisy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest

from mesh.deadlines import (
    DeadlinePropagation,
    current_deadline,
    incoming_deadline,
    outgoing_timeout,
    remaining,
)
from mesh.interceptors import FaultConfig, ServerInterceptor
from mesh.server import MeshServer, ServerConfig, build_server, start

UPSTREAM = "test.deadlines.v1.Upstream"
RELAY = "test.deadlines.v1.Relay"
CLIENT_TIMEOUT = 0.5
LONG_SLEEP = 5.0  # the upstream's work when nobody stops it
SHORT_SLEEP = 1.5  # the control's, to keep it quick
# "Long before the 5 s sleep ends": generous for a loaded 2-core machine.
WELL_BEFORE = 3.0
WAIT = 10.0  # the longest any test waits for anything
# A server's time_remaining() can exceed the timeout its caller set by a few
# ms: the grpc-timeout header rounds up, and the server converts clocks.
SLACK = 0.05
Context = grpc.aio.ServicerContext[bytes, bytes]


@dataclass
class Upstream:
    """The last hop: records what each call saw, and when it was cancelled."""

    calls: int = 0
    # context.time_remaining() at the start of each call: the deadline on the wire.
    wire_remaining: list[float | None] = field(default_factory=list)
    # deadlines.remaining() there: DeadlineScope's work, in every RPC shape.
    scoped_remaining: list[float | None] = field(default_factory=list)
    cancelled_at: list[float] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def _seen(self, context: Context) -> None:
        self.calls += 1
        self.wire_remaining.append(context.time_remaining())
        self.scoped_remaining.append(remaining())

    async def sleep(self, request: bytes, context: Context) -> bytes:
        """Works for `request` seconds, checking for cancellation as it goes."""
        self._seen(context)
        end = time.monotonic() + float(request.decode())
        try:
            while time.monotonic() < end:
                if context.cancelled():
                    self._cancel()
                    return b""
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            self._cancel()
            raise
        self.finished.set()
        return b"done"

    def _cancel(self) -> None:
        self.cancelled_at.append(time.monotonic())
        self.cancelled.set()

    async def fan_out(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        self._seen(context)
        yield request

    async def collect(self, requests: AsyncIterator[bytes], context: Context) -> bytes:
        self._seen(context)
        return b"".join([r async for r in requests])

    async def chat(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        self._seen(context)
        async for request in requests:
            yield request

    def handlers(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        return grpc.method_handlers_generic_handler(
            UPSTREAM,
            {
                "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
                "FanOut": grpc.unary_stream_rpc_method_handler(self.fan_out),
                "Collect": grpc.stream_unary_rpc_method_handler(self.collect),
                "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            },
        )


@dataclass
class Relay:
    """The middle hop: calls the upstream's Sleep from a shielded task."""

    upstream: grpc.aio.Channel
    # deadlines.remaining() at the start of each relayed call (DeadlineScope's work).
    scoped_remaining: list[float | None] = field(default_factory=list)
    # How the call to the upstream ended, and how long after it was made.
    outcomes: list[tuple[grpc.StatusCode, float]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def relay(self, request: bytes, context: Context) -> bytes:
        """`request` is "pause,sleep": wait `pause` s, then have the upstream sleep."""
        self.scoped_remaining.append(remaining())
        pause, sleep = (float(part) for part in request.decode().split(","))
        code, details = await asyncio.shield(asyncio.create_task(self._call(pause, sleep)))
        left = remaining()
        if code is grpc.StatusCode.OK or context.done() or (left is not None and left <= 0):
            # Past its deadline the call is over (grpc cancels the handler, or
            # is about to): a status sent now would fail, and nobody reads it.
            return b"relayed"
        await context.abort(code, details)

    async def _call(self, pause: float, sleep: float) -> tuple[grpc.StatusCode, str]:
        await asyncio.sleep(pause)
        started = time.monotonic()
        method = self.upstream.unary_unary(f"/{UPSTREAM}/Sleep", None, None)
        try:
            await method(str(sleep).encode())
            code, details = grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
        self.outcomes.append((code, time.monotonic() - started))
        self.done.set()
        return code, details


@dataclass
class Chain:
    client: grpc.aio.Channel  # to the relay
    upstream_channel: grpc.aio.Channel  # straight to the upstream, for the shape tests
    upstream: Upstream
    relay: Relay


def _config() -> ServerConfig:
    return ServerConfig(listen_addr="127.0.0.1:0", grace_s=0.0, drain_s=0.0, faults=FaultConfig())


async def _started(
    service: str, handlers: grpc.GenericRpcHandler[bytes, bytes], *scope: ServerInterceptor
) -> MeshServer:
    mesh = build_server(_config(), [service], interceptors=scope)
    mesh.server.add_generic_rpc_handlers([handlers])
    await start(mesh)
    return mesh


@asynccontextmanager
async def _chain(propagate: bool, default_timeout_s: float | None = None) -> AsyncIterator[Chain]:
    """client -> relay -> upstream; `propagate` puts both interceptors on the relay."""
    upstream = Upstream()
    # build_server gives every server a DeadlineScope.
    upstream_server = await _started(UPSTREAM, upstream.handlers())
    target = f"127.0.0.1:{upstream_server.port}"
    client_interceptors = DeadlinePropagation(default_timeout_s).interceptors() if propagate else []
    upstream_channel = grpc.aio.insecure_channel(target, interceptors=client_interceptors)
    relay = Relay(upstream_channel)
    handlers = grpc.method_handlers_generic_handler(
        RELAY, {"Relay": grpc.unary_unary_rpc_method_handler(relay.relay)}
    )
    relay_server = await _started(RELAY, handlers)
    client = grpc.aio.insecure_channel(f"127.0.0.1:{relay_server.port}")
    try:
        yield Chain(client, upstream_channel, upstream, relay)
    finally:
        await client.close(None)
        await relay_server.server.stop(None)
        await upstream_channel.close(None)
        await upstream_server.server.stop(None)


async def _relayed(chain: Chain, pause: float, sleep: float, client_timeout: float | None) -> float:
    """Calls the relay; returns how long it took to fail with DEADLINE_EXCEEDED."""
    method = chain.client.unary_unary(f"/{RELAY}/Relay", None, None)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(method(f"{pause},{sleep}".encode(), timeout=client_timeout), WAIT)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value.details()
    return time.monotonic() - started


async def test_the_client_deadline_stops_the_last_hop() -> None:
    async with _chain(propagate=True) as chain:
        started = time.monotonic()
        elapsed = await _relayed(chain, 0.0, LONG_SLEEP, CLIENT_TIMEOUT)
        await asyncio.wait_for(chain.upstream.cancelled.wait(), WAIT)

        assert elapsed < WELL_BEFORE
        (scoped,) = chain.relay.scoped_remaining
        assert scoped is not None
        assert 0 < scoped <= CLIENT_TIMEOUT + SLACK  # grpc-timeout rounds up
        (seen,) = chain.upstream.wire_remaining
        assert seen is not None
        assert seen <= CLIENT_TIMEOUT + SLACK
        (cancelled_at,) = chain.upstream.cancelled_at
        assert cancelled_at - started < WELL_BEFORE
        assert not chain.upstream.finished.is_set()
        await asyncio.wait_for(chain.relay.done.wait(), WAIT)
        assert chain.relay.outcomes[0][0] == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_control_without_propagation_the_last_hop_runs_on() -> None:
    async with _chain(propagate=False) as chain:
        started = time.monotonic()
        elapsed = await _relayed(chain, 0.0, SHORT_SLEEP, CLIENT_TIMEOUT)
        assert elapsed < SHORT_SLEEP  # the client gave up at its deadline ...
        await asyncio.wait_for(chain.upstream.finished.wait(), WAIT)

        # ... but the upstream knew of no deadline and worked to the end.
        assert chain.upstream.wire_remaining == [None]
        assert not chain.upstream.cancelled.is_set()
        assert time.monotonic() - started >= SHORT_SLEEP
        await asyncio.wait_for(chain.relay.done.wait(), WAIT)
        assert chain.relay.outcomes[0][0] == grpc.StatusCode.OK


async def test_the_default_timeout_bounds_a_call_nobody_bounded() -> None:
    default = 0.8
    async with _chain(propagate=True, default_timeout_s=default) as chain:
        elapsed = await _relayed(chain, 0.0, LONG_SLEEP, None)
        await asyncio.wait_for(chain.upstream.cancelled.wait(), WAIT)

        assert elapsed < WELL_BEFORE
        assert chain.relay.scoped_remaining == [None]
        (seen,) = chain.upstream.wire_remaining
        assert seen is not None
        assert seen <= default + SLACK


async def test_a_call_made_after_the_deadline_fails_without_reaching_the_upstream() -> None:
    async with _chain(propagate=True) as chain:
        # The relay waits past the client's deadline before calling on.
        await _relayed(chain, CLIENT_TIMEOUT + 0.3, LONG_SLEEP, CLIENT_TIMEOUT)
        await asyncio.wait_for(chain.relay.done.wait(), WAIT)

        ((code, took),) = chain.relay.outcomes
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert took < CLIENT_TIMEOUT  # at once, not after a round trip's timeout
        assert chain.upstream.calls == 0


async def _every_shape(channel: grpc.aio.Channel, call_timeout: float | None = None) -> None:
    """One call of each RPC shape to the upstream, made in the current context."""
    await channel.unary_unary(f"/{UPSTREAM}/Sleep", None, None)(b"0", timeout=call_timeout)
    fan_out = channel.unary_stream(f"/{UPSTREAM}/FanOut", None, None)(b"x", timeout=call_timeout)
    assert [r async for r in fan_out] == [b"x"]
    collect = channel.stream_unary(f"/{UPSTREAM}/Collect", None, None)
    assert await collect(iter([b"a", b"b"]), timeout=call_timeout) == b"ab"
    chat = channel.stream_stream(f"/{UPSTREAM}/Chat", None, None)(
        iter([b"c"]), timeout=call_timeout
    )
    assert [r async for r in chat] == [b"c"]


async def test_every_call_shape_is_bounded_by_the_incoming_deadline() -> None:
    async with _chain(propagate=True) as chain:
        with incoming_deadline(time.monotonic() + 2.0):
            await _every_shape(chain.upstream_channel)
            await _every_shape(chain.upstream_channel, call_timeout=1.0)  # its own is shorter
            await _every_shape(chain.upstream_channel, call_timeout=30.0)  # the incoming one is
        bounds = [2.0] * 4 + [1.0] * 4 + [2.0] * 4
        assert len(chain.upstream.wire_remaining) == len(bounds)
        for seen, bound in zip(chain.upstream.wire_remaining, bounds, strict=True):
            assert seen is not None
            assert 0 < seen <= bound + SLACK
        for scoped, bound in zip(chain.upstream.scoped_remaining, bounds, strict=True):
            assert scoped is not None
            assert 0 < scoped <= bound + SLACK


async def test_without_an_incoming_deadline_a_call_keeps_its_own_or_gets_none() -> None:
    async with _chain(propagate=True) as chain:
        await _every_shape(chain.upstream_channel)
        await _every_shape(chain.upstream_channel, call_timeout=3.0)
        assert chain.upstream.wire_remaining[:4] == [None] * 4
        assert chain.upstream.scoped_remaining[:4] == [None] * 4
        for seen in chain.upstream.wire_remaining[4:]:
            assert seen is not None
            assert 0 < seen <= 3.0 + SLACK


async def _one_call(channel: grpc.aio.Channel, shape: str) -> None:
    if shape == "unary_unary":
        await channel.unary_unary(f"/{UPSTREAM}/Sleep", None, None)(b"5")
    elif shape == "unary_stream":
        [r async for r in channel.unary_stream(f"/{UPSTREAM}/FanOut", None, None)(b"x")]
    elif shape == "stream_unary":
        await channel.stream_unary(f"/{UPSTREAM}/Collect", None, None)(iter([b"a"]))
    else:
        [r async for r in channel.stream_stream(f"/{UPSTREAM}/Chat", None, None)(iter([b"c"]))]


@pytest.mark.parametrize("shape", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"])
async def test_every_call_shape_fails_fast_past_the_incoming_deadline(shape: str) -> None:
    async with _chain(propagate=True) as chain:
        channel = chain.upstream_channel
        started = time.monotonic()
        with (
            incoming_deadline(time.monotonic() - 0.1),
            pytest.raises(grpc.aio.AioRpcError) as caught,
        ):
            await _one_call(channel, shape)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "deadline passed" in (caught.value.details() or "")
        assert UPSTREAM in (caught.value.details() or "")
        assert time.monotonic() - started < 1.0
        assert chain.upstream.calls == 0


@pytest.mark.parametrize(
    ("own", "deadline", "default", "expected"),
    [
        (None, None, None, None),  # nobody says anything, and no default
        (None, None, 2.0, 2.0),  # the default
        (1.0, None, 2.0, 1.0),  # the call's own beats the default
        (None, 10.5, 2.0, 0.5),  # what is left of the incoming call
        (0.2, 10.5, None, 0.2),  # the call's own, when shorter
        (5.0, 10.5, 2.0, 0.5),  # what is left, when shorter; never the default
        (None, 9.0, None, -1.0),  # passed: the interceptor fails it at once
    ],
)
def test_outgoing_timeout(
    own: float | None, deadline: float | None, default: float | None, expected: float | None
) -> None:
    assert outgoing_timeout(own, deadline, default, now=10.0) == expected


def test_incoming_deadline_is_scoped() -> None:
    assert current_deadline() is None
    assert remaining() is None
    with incoming_deadline(100.0):
        assert current_deadline() == 100.0
        assert remaining(now=99.5) == 0.5
        with incoming_deadline(None):  # detached work
            assert current_deadline() is None
        assert current_deadline() == 100.0
    assert current_deadline() is None


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_default_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="default_timeout_s"):
        DeadlinePropagation(bad)
