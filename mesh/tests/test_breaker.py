"""The circuit breaker: its state machine on a fake clock, then the interceptor
in front of a real in-process upstream that fails on demand and counts the
calls it gets.

The control test calls the same failing upstream without the interceptor and
shows every call reaching it. So when the breaker tests see the count stand
still, the breaker is what stopped the calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.breaker import (
    FAILURE_CODES,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    is_failure,
)
from mesh.breaker_interceptor import BreakerInterceptor
from mesh.config import ConfigError

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
SERVICE = "test.breaker.v1.Upstream"
TIMEOUT = 10.0  # a hung call fails the test instead of hanging it


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the state machine -------------------------------------------------------

# Step language of the table below:
#   "ok" / "fail"  allow() must say yes, then record a success / a failure
#   "probe"        allow() must say yes; the call stays in flight
#   "refuse"       allow() must say no
#   "wait N"       the clock moves N seconds
STREAK = BreakerConfig(consecutive_failures=3, min_calls=1000, open_s=5.0, half_open_probes=2)
RATIO = BreakerConfig(consecutive_failures=1000, error_ratio=0.5, window_s=10.0, min_calls=4)

MACHINE_CASES = [
    pytest.param(STREAK, "fail fail", CLOSED, [], id="below the streak stays closed"),
    pytest.param(STREAK, "fail fail fail", OPEN, ["closed>open"], id="streak opens"),
    pytest.param(STREAK, "fail fail ok fail fail", CLOSED, [], id="a success resets the streak"),
    pytest.param(RATIO, "ok fail ok fail fail", OPEN, ["closed>open"], id="ratio over limit opens"),
    pytest.param(RATIO, "ok fail ok fail", CLOSED, [], id="ratio at the limit stays closed"),
    pytest.param(RATIO, "fail ok fail", CLOSED, [], id="ratio needs min_calls"),
    pytest.param(
        RATIO, "fail fail wait 11 ok ok fail", CLOSED, [], id="ratio forgets calls out of window"
    ),
    pytest.param(
        STREAK,
        "fail fail fail refuse wait 4.9 refuse",
        OPEN,
        ["closed>open"],
        id="open refuses until open_s",
    ),
    pytest.param(
        STREAK,
        "fail fail fail wait 5",
        HALF_OPEN,
        ["closed>open", "open>half_open"],
        id="open turns half-open after open_s",
    ),
    pytest.param(
        STREAK,
        "fail fail fail wait 5 probe probe refuse refuse",
        HALF_OPEN,
        ["closed>open", "open>half_open"],
        id="half-open admits exactly the probes",
    ),
    pytest.param(
        STREAK,
        "fail fail fail wait 5 ok fail refuse",
        OPEN,
        ["closed>open", "open>half_open", "half_open>open"],
        id="a failed probe reopens",
    ),
    pytest.param(
        STREAK,
        "fail fail fail wait 5 ok ok ok ok",
        CLOSED,
        ["closed>open", "open>half_open", "half_open>closed"],
        id="successful probes close",
    ),
    pytest.param(
        STREAK,
        "fail fail fail wait 5 fail refuse wait 5 ok ok",
        CLOSED,
        ["closed>open", "open>half_open", "half_open>open", "open>half_open", "half_open>closed"],
        id="reopened breaker probes again after open_s",
    ),
    pytest.param(
        STREAK,
        "fail fail fail wait 5 ok ok fail fail",
        CLOSED,
        ["closed>open", "open>half_open", "half_open>closed"],
        id="closing forgets the old streak",
    ),
]


def _run(breaker: CircuitBreaker, clock: FakeClock, script: str) -> None:
    words = iter(script.split())
    for word in words:
        if word == "wait":
            clock.advance(float(next(words)))
        elif word == "refuse":
            assert not breaker.allow(), f"{word} in {script!r}"
        else:
            assert breaker.allow(), f"{word} in {script!r}"
            if word != "probe":
                breaker.record(success=word == "ok")


@pytest.mark.parametrize(("config", "script", "state", "transitions"), MACHINE_CASES)
def test_state_machine(
    config: BreakerConfig, script: str, state: BreakerState, transitions: list[str]
) -> None:
    clock = FakeClock()
    seen: list[str] = []
    breaker = CircuitBreaker(config, clock, [lambda old, new: seen.append(f"{old}>{new}")])
    _run(breaker, clock, script)
    assert breaker.state is state
    assert seen == transitions


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_which_codes_count_as_failures(code: grpc.StatusCode) -> None:
    transient = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN"}
    expected = None if code.name == "CANCELLED" else code.name in transient
    assert is_failure(code) is expected
    assert (code in FAILURE_CODES) is (code.name in transient)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    ],
    ids=lambda code: code.name,
)
def test_business_answers_do_not_open(code: grpc.StatusCode) -> None:
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, min_calls=1), FakeClock())
    for _ in range(50):
        assert breaker.allow()
        breaker.record(success=not is_failure(code))
    assert breaker.state is CLOSED


def test_a_call_from_before_a_state_change_is_not_a_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, half_open_probes=1), clock)
    late = breaker.acquire()  # admitted while closed, still running
    assert late is not None
    breaker.record(success=False)
    clock.advance(5)
    assert breaker.state is HALF_OPEN
    breaker.record(success=False, permit=late)  # says nothing about half-open
    assert breaker.state is HALF_OPEN
    probe = breaker.acquire()
    assert probe is not None
    assert probe.probe
    breaker.record(success=True, permit=probe)
    assert breaker.state is CLOSED


def test_a_released_probe_frees_its_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, half_open_probes=1), clock)
    breaker.record(success=False)
    clock.advance(5)
    probe = breaker.acquire()
    assert probe is not None
    assert breaker.acquire() is None
    breaker.release(probe)  # cancelled by its caller: no outcome
    assert breaker.state is HALF_OPEN
    assert breaker.allow()


def test_retry_after_counts_down_while_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_s=5.0), clock)
    assert breaker.retry_after() == 0.0
    breaker.record(success=False)
    clock.advance(1.5)
    assert breaker.retry_after() == pytest.approx(3.5)
    assert breaker.reason == "1 consecutive failures"


def test_a_failing_listener_does_not_break_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    def broken(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("exporter down")

    seen: list[BreakerState] = []
    breaker = CircuitBreaker(
        BreakerConfig(consecutive_failures=1),
        FakeClock(),
        [broken, lambda _, new: seen.append(new)],
    )
    with caplog.at_level(logging.ERROR, logger="mesh.breaker"):
        breaker.record(success=False)
    assert breaker.state is OPEN
    assert seen == [OPEN]
    assert "listener failed" in caplog.text


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"consecutive_failures": 2.5}, "consecutive_failures"),
        ({"consecutive_failures": True}, "consecutive_failures"),
        ({"min_calls": 0}, "min_calls"),
        ({"half_open_probes": 0}, "half_open_probes"),
        ({"half_open_probes": "2"}, "half_open_probes"),
        ({"error_ratio": -0.1}, "error_ratio"),
        ({"error_ratio": 1.5}, "error_ratio"),
        ({"error_ratio": float("nan")}, "error_ratio"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": float("inf")}, "window_s"),
        ({"open_s": -1}, "open_s"),
        ({"open_s": "5s"}, "open_s"),
    ],
)
def test_config_validation_names_the_field(changes: dict[str, object], field_name: str) -> None:
    with pytest.raises(ConfigError, match=field_name):
        BreakerConfig(**changes)  # type: ignore[arg-type]


def test_config_defaults_are_valid() -> None:
    config = BreakerConfig()
    assert config.consecutive_failures >= 1
    assert BreakerConfig(error_ratio=1, window_s=1, open_s=0.2).open_s == 0.2


# --- the interceptor in front of a real upstream ------------------------------


@dataclass
class Upstream:
    """An in-process server: `Call` fails with UNAVAILABLE while `failing`,
    `Missing` answers NOT_FOUND; `Stream`, `Upload` and `Chat` are Call's
    twins of the three streaming shapes.
    Every call is counted when it arrives, then waits for `gate`."""

    port: int = 0
    calls: int = 0
    failing: bool = True
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: int = 0

    async def _arrive(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        self.calls += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream down")

    async def call(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await self._arrive(context)
        return request

    async def missing(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        self.calls += 1
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such product")

    async def stream(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        await self._arrive(context)
        yield request

    async def upload(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        await self._arrive(context)
        return b"".join([request async for request in requests])

    async def chat(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        await self._arrive(context)
        async for request in requests:
            yield request


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    state.gate.set()
    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Call": grpc.unary_unary_rpc_method_handler(state.call),
            "Missing": grpc.unary_unary_rpc_method_handler(state.missing),
            "Stream": grpc.unary_stream_rpc_method_handler(state.stream),
            "Upload": grpc.stream_unary_rpc_method_handler(state.upload),
            "Chat": grpc.stream_stream_rpc_method_handler(state.chat),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handlers])
    state.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield state
    finally:
        await server.stop(None)


@asynccontextmanager
async def _client(
    upstream: Upstream, interceptor: BreakerInterceptor | None
) -> AsyncIterator[grpc.aio.Channel]:
    interceptors = [] if interceptor is None else interceptor.interceptors()
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{upstream.port}", interceptors=interceptors
    ) as channel:
        yield channel


def _unary(channel: grpc.aio.Channel, method: str = "Call") -> Callable[[], Awaitable[bytes]]:
    stub = channel.unary_unary(f"/{SERVICE}/{method}", None, None)

    async def call() -> bytes:
        response: bytes = await stub(b"ping", timeout=TIMEOUT)
        return response

    return call


async def _status(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def _eventually(condition: Callable[[], bool]) -> None:
    """Waits, at most TIMEOUT, for a condition another task brings about."""
    for _ in range(int(TIMEOUT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still false after {TIMEOUT} s")


def _breaker(clock: FakeClock, probes: int = 2) -> BreakerInterceptor:
    config = BreakerConfig(
        consecutive_failures=3, min_calls=1000, open_s=5.0, half_open_probes=probes
    )
    return BreakerInterceptor("catalog", config, clock)


async def test_control_without_the_breaker_every_call_reaches_the_upstream(
    upstream: Upstream,
) -> None:
    async with _client(upstream, None) as channel:
        call = _unary(channel)
        for _ in range(10):
            assert await _status(call()) == (grpc.StatusCode.UNAVAILABLE, "upstream down")
    assert upstream.calls == 10


async def test_open_breaker_fails_at_once_without_reaching_the_upstream(
    upstream: Upstream,
) -> None:
    interceptor = _breaker(FakeClock())
    async with _client(upstream, interceptor) as channel:
        call = _unary(channel)
        for _ in range(3):
            assert await _status(call()) == (grpc.StatusCode.UNAVAILABLE, "upstream down")
        assert interceptor.breaker.state is OPEN
        for _ in range(10):
            code, details = await _status(call())
            assert code == grpc.StatusCode.UNAVAILABLE
            assert details == (
                "circuit breaker for catalog is open (3 consecutive failures); retry after 5.0 s"
            )
    assert upstream.calls == 3
    assert interceptor.rejected == 10


async def test_a_bypassed_method_reaches_the_upstream_whatever_the_state_and_counts_not(
    upstream: Upstream,
) -> None:
    config = BreakerConfig(consecutive_failures=3, min_calls=1000, open_s=5.0)
    bypass = {f"/{SERVICE}/Missing"}
    interceptor = BreakerInterceptor("payments", config, FakeClock(), bypass=bypass)
    async with _client(upstream, interceptor) as channel:
        call, missing = _unary(channel), _unary(channel, "Missing")
        for _ in range(3):
            await _status(call())
        assert interceptor.breaker.state is OPEN
        for _ in range(4):
            assert (await _status(missing()))[0] == grpc.StatusCode.NOT_FOUND
        assert (await _status(call()))[1].startswith("circuit breaker for payments is open")
    assert upstream.calls == 3 + 4
    assert interceptor.rejected == 1


async def test_half_open_lets_exactly_the_probes_through_and_closes_on_recovery(
    upstream: Upstream,
) -> None:
    clock = FakeClock()
    interceptor = _breaker(clock, probes=2)
    async with _client(upstream, interceptor) as channel:
        call = _unary(channel)
        for _ in range(3):
            await _status(call())
        clock.advance(5.0)
        upstream.failing = False  # recovered, but holds the probes until the gate opens
        upstream.gate.clear()
        tasks = [asyncio.create_task(_status(call())) for _ in range(6)]
        await _eventually(lambda: upstream.calls == 3 + 2)
        upstream.gate.set()
        outcomes = await asyncio.gather(*tasks)
        assert upstream.calls == 3 + 2
        assert sorted(code.name for code, _ in outcomes) == ["OK"] * 2 + ["UNAVAILABLE"] * 4
        refused = [details for code, details in outcomes if code != grpc.StatusCode.OK]
        assert all(d.startswith("circuit breaker for catalog is half-open") for d in refused)
        assert interceptor.breaker.state is CLOSED
        for _ in range(5):
            assert await _status(call()) == (grpc.StatusCode.OK, "")
    assert upstream.calls == 3 + 2 + 5
    assert interceptor.transitions == {
        (CLOSED, OPEN): 1,
        (OPEN, HALF_OPEN): 1,
        (HALF_OPEN, CLOSED): 1,
    }


async def test_failed_probes_reopen_the_breaker(upstream: Upstream) -> None:
    clock = FakeClock()
    interceptor = _breaker(clock, probes=2)
    async with _client(upstream, interceptor) as channel:
        call = _unary(channel)
        for _ in range(3):
            await _status(call())
        clock.advance(5.0)
        upstream.gate.clear()  # still failing
        tasks = [asyncio.create_task(_status(call())) for _ in range(4)]
        await _eventually(lambda: upstream.calls == 3 + 2)
        upstream.gate.set()
        outcomes = await asyncio.gather(*tasks)
        assert [code for code, _ in outcomes] == [grpc.StatusCode.UNAVAILABLE] * 4
        assert interceptor.breaker.state is OPEN
        assert interceptor.breaker.reason == "half-open probe failed"
        code, details = await _status(call())
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details.startswith("circuit breaker for catalog is open (half-open probe failed)")
    assert upstream.calls == 3 + 2


async def test_open_breaker_turns_half_open_on_the_real_clock(upstream: Upstream) -> None:
    config = BreakerConfig(consecutive_failures=2, open_s=0.2)
    interceptor = BreakerInterceptor("catalog", config)
    async with _client(upstream, interceptor) as channel:
        call = _unary(channel)
        for _ in range(2):
            await _status(call())
        code, details = await _status(call())
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details.startswith("circuit breaker for catalog is open")
        await asyncio.sleep(0.3)  # at least open_s, however slow the machine
        upstream.failing = False
        assert await _status(call()) == (grpc.StatusCode.OK, "")
        assert interceptor.breaker.state is CLOSED
    assert upstream.calls == 3


async def test_business_answers_keep_the_breaker_closed(upstream: Upstream) -> None:
    interceptor = _breaker(FakeClock())
    async with _client(upstream, interceptor) as channel:
        missing = _unary(channel, "Missing")
        for _ in range(10):
            assert await _status(missing()) == (grpc.StatusCode.NOT_FOUND, "no such product")
    assert interceptor.breaker.state is CLOSED
    assert upstream.calls == 10


async def test_a_cancelled_call_is_no_failure_and_reaches_the_upstream(
    upstream: Upstream,
) -> None:
    interceptor = BreakerInterceptor("catalog", BreakerConfig(consecutive_failures=1))
    upstream.gate.clear()
    async with _client(upstream, interceptor) as channel:
        stub = channel.unary_unary(f"/{SERVICE}/Call", None, None)
        call = stub(b"ping", timeout=TIMEOUT)
        await _eventually(lambda: upstream.calls == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await _eventually(lambda: upstream.cancelled == 1)
    assert interceptor.breaker.state is CLOSED


async def test_streaming_calls_open_the_breaker_and_every_shape_is_refused(
    upstream: Upstream,
) -> None:
    interceptor = _breaker(FakeClock())
    async with _client(upstream, interceptor) as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Stream", None, None)
        upload = channel.stream_unary(f"/{SERVICE}/Upload", None, None)
        chat = channel.stream_stream(f"/{SERVICE}/Chat", None, None)

        async def read_stream() -> list[bytes]:
            return [response async for response in stream(b"ping", timeout=TIMEOUT)]

        async def read_chat() -> list[bytes]:
            return [response async for response in chat(iter([b"a", b"b"]), timeout=TIMEOUT)]

        for _ in range(3):
            assert await _status(read_stream()) == (grpc.StatusCode.UNAVAILABLE, "upstream down")
        # A streaming call's outcome is settled just after it ends.
        await _eventually(lambda: interceptor.breaker.state is OPEN)
        refused = [
            await _status(read_stream()),
            await _status(upload(iter([b"a", b"b"]), timeout=TIMEOUT)),
            await _status(read_chat()),
        ]
        for code, details in refused:
            assert code == grpc.StatusCode.UNAVAILABLE
            assert details.startswith(
                "circuit breaker for catalog is open (3 consecutive failures)"
            )
    assert upstream.calls == 3
    assert interceptor.rejected == 3


async def test_streaming_probes_close_the_breaker(upstream: Upstream) -> None:
    clock = FakeClock()
    interceptor = _breaker(clock, probes=1)
    async with _client(upstream, interceptor) as channel:
        call = _unary(channel)
        for _ in range(3):
            await _status(call())
        clock.advance(5.0)
        upstream.failing = False
        upload = channel.stream_unary(f"/{SERVICE}/Upload", None, None)
        assert await upload(iter([b"a", b"b"]), timeout=TIMEOUT) == b"ab"
        await _eventually(lambda: interceptor.breaker.state is CLOSED)
    assert upstream.calls == 4


async def test_state_changes_are_logged_counted_and_span_events(
    upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)
    interceptor = _breaker(FakeClock())
    with caplog.at_level(logging.INFO, logger="mesh.breaker"):
        async with _client(upstream, interceptor) as channel:
            call = _unary(channel)
            with tracer.start_as_current_span("checkout"):
                for _ in range(3):
                    await _status(call())
    provider.shutdown()
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    assert event.name == "circuit_breaker.state_change"
    assert dict(event.attributes or {}) == {
        "circuit_breaker.name": "catalog",
        "circuit_breaker.previous_state": "closed",
        "circuit_breaker.state": "open",
        "circuit_breaker.reason": "3 consecutive failures",
    }
    assert interceptor.transitions == {(CLOSED, OPEN): 1}
    assert "circuit breaker for catalog: closed -> open (3 consecutive failures)" in caplog.text
