"""Circuit breakers for the Python clients, one per upstream.

A breaker watches the outcomes of the calls to one upstream. While the
upstream answers it stays CLOSED. When the upstream stops answering (N
failures in a row, or a failure ratio above a limit over a sliding window)
it goes OPEN, and every call fails at once with UNAVAILABLE without reaching
the upstream: callers get a quick, clear answer instead of waiting out their
deadlines, and the upstream gets room to recover. After `open_s` it goes
HALF_OPEN and lets exactly `half_open_probes` calls through: if they all
succeed it closes, and if any fails it opens again.

`CircuitBreaker` is only the state machine. It uses no asyncio and takes a
clock as a parameter, so tests drive it with a fake clock.
`mesh.breaker_interceptor.BreakerInterceptor` puts one in front of a
grpc.aio channel: pass `BreakerInterceptor(name, config).interceptors()` to
the channel.

Failures are the codes that say the upstream could not serve the call
(`FAILURE_CODES`). A business answer (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, ...) shows that the upstream works, so it counts as a
success. CANCELLED means the caller gave up, so it counts as neither.

Scope. An interceptor sees neither the channel's target nor the replica that
served a call. A breaker therefore covers one upstream as a whole (all of its
replicas behind round_robin), it takes its name at construction, and each
upstream channel needs its own `BreakerInterceptor`. grpc's built-in retries
(service config) run beneath the interceptors, so the breaker sees one
outcome per call, after retries. While the breaker is open nothing is
retried, because nothing is sent.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import grpc

from mesh.config import ConfigError

__all__ = [
    "FAILURE_CODES",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
    "is_failure",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # monotonic seconds

# The upstream could not serve the call: overloaded, down, too slow, or broken.
FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def is_failure(code: grpc.StatusCode) -> bool | None:
    """True for a failure, False for any answer from a working upstream
    (OK or a business error), None for CANCELLED (the caller gave up)."""
    if code == grpc.StatusCode.CANCELLED:
        return None
    return code in FAILURE_CODES


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Listener = Callable[[BreakerState, BreakerState], None]


@dataclass(frozen=True)
class BreakerConfig:
    """When to open, how long to stay open, and how many probes to let through.

    It opens after `consecutive_failures` failures in a row, or when more than
    `error_ratio` of the calls in the last `window_s` seconds failed (with at
    least `min_calls` calls in that window; an `error_ratio` of 1 turns this
    rule off). It stays open for `open_s` seconds, then lets
    `half_open_probes` calls through.
    """

    consecutive_failures: int = 5
    error_ratio: float = 0.5
    window_s: float = 10.0
    min_calls: int = 20
    open_s: float = 5.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        # These values come from a policy file, where a typo must stop the start-up.
        _integer("consecutive_failures", self.consecutive_failures)
        _integer("min_calls", self.min_calls)
        _integer("half_open_probes", self.half_open_probes)
        ratio = _number("error_ratio", self.error_ratio)
        if not 0 <= ratio <= 1:
            raise ConfigError(f"circuit breaker error_ratio must be within [0, 1], got {ratio!r}")
        for name in ("window_s", "open_s"):
            value = _number(name, getattr(self, name))
            if value <= 0:
                raise ConfigError(f"circuit breaker {name} must be greater than 0, got {value!r}")


def _integer(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"circuit breaker {name} must be an integer, got {value!r}")
    if value < 1:
        raise ConfigError(f"circuit breaker {name} must be at least 1, got {value!r}")
    return value


def _number(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"circuit breaker {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"circuit breaker {name} must be a finite number, got {value!r}")
    return float(value)


_BUCKETS = 10


class _Window:
    """Calls and failures over the last `span_s` seconds, in ten buckets.

    Memory stays the same at any call rate, and the window slides by a tenth
    of its span at a time, which is precise enough for a breaker.
    """

    def __init__(self, span_s: float) -> None:
        self._width = span_s / _BUCKETS
        self._buckets: collections.deque[list[int]] = collections.deque()  # [index, calls, fails]
        self.calls = 0
        self.failures = 0

    def add(self, now: float, failed: bool) -> None:
        index = self._expire(now)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        self.calls += 1
        self.failures += failed

    def _expire(self, now: float) -> int:
        index = math.floor(now / self._width)
        while self._buckets and self._buckets[0][0] <= index - _BUCKETS:
            _, calls, failures = self._buckets.popleft()
            self.calls -= calls
            self.failures -= failures
        return index

    def clear(self) -> None:
        self._buckets.clear()
        self.calls = self.failures = 0


@dataclass(frozen=True)
class Permit:
    """Leave to make one call, from `CircuitBreaker.acquire`.

    The outcome of a call started before a state change says nothing about
    the new state. A call admitted while closed, for instance, can finish
    during half-open, and it must not count as a probe. `generation` lets
    `record` tell such calls apart and ignore them.
    """

    generation: int
    probe: bool


class CircuitBreaker:
    """The CLOSED -> OPEN -> HALF_OPEN -> CLOSED (or OPEN) state machine.

    For each call, `acquire()` (or `allow()`) first, then `record(success)`
    once the outcome is known, or `release()` if the call ended with no
    outcome (cancelled). OPEN turns into HALF_OPEN lazily, on the first look at
    the breaker after `open_s`. Listeners get (old, new) on every change.
    This class is not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        config: BreakerConfig,
        clock: Clock = time.monotonic,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.config = config
        self._clock = clock
        self._listeners = list(listeners)
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._reason = ""
        self._opened_at = 0.0
        self._consecutive = 0
        self._window = _Window(config.window_s)
        self._probes_admitted = 0
        self._probe_successes = 0

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def state(self) -> BreakerState:
        self._advance()
        return self._state

    @property
    def reason(self) -> str:
        """Why it last opened, e.g. `5 consecutive failures`."""
        return self._reason

    @property
    def probes_in_flight(self) -> int:
        """Half-open probes admitted and not yet finished."""
        if self.state is not BreakerState.HALF_OPEN:
            return 0
        return self._probes_admitted - self._probe_successes

    def retry_after(self) -> float:
        """Seconds until an open breaker goes half-open; 0 when it is not open."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.config.open_s - self._clock())

    def acquire(self) -> Permit | None:
        """Leave to make a call, or None if the call must fail at once. While
        half-open, each permit takes one of the `half_open_probes` slots."""
        self._advance()
        if self._state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        if self._state is BreakerState.OPEN:
            return None
        if self._probes_admitted >= self.config.half_open_probes:
            return None
        self._probes_admitted += 1
        return Permit(self._generation, probe=True)

    def allow(self) -> bool:
        """`acquire()` for callers that keep no permit; `record` then applies to now."""
        return self.acquire() is not None

    def release(self, permit: Permit) -> None:
        """Gives back a permit whose call has no outcome (the caller cancelled it)."""
        if permit.probe and permit.generation == self._generation:
            self._probes_admitted -= 1

    def record(self, success: bool, permit: Permit | None = None) -> None:
        """The outcome of a call: `success` is False for a failure (`is_failure`)."""
        self._advance()
        if permit is not None and permit.generation != self._generation:
            return  # the call started before the last state change
        if self._state is BreakerState.CLOSED:
            self._record_closed(success)
        elif self._state is BreakerState.HALF_OPEN:
            if not success:
                self._open("half-open probe failed")
                return
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_probes:
                self._move(BreakerState.CLOSED)
        # While open, only calls without a permit can get here: nothing to learn.

    def _record_closed(self, success: bool) -> None:
        config = self.config
        self._window.add(self._clock(), failed=not success)
        if success:
            self._consecutive = 0
            return
        self._consecutive += 1
        if self._consecutive >= config.consecutive_failures:
            self._open(f"{self._consecutive} consecutive failures")
            return
        calls, failures = self._window.calls, self._window.failures
        if calls >= config.min_calls and failures / calls > config.error_ratio:
            self._open(f"{failures} of {calls} calls failed in {config.window_s:g} s")

    def _advance(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.config.open_s
        ):
            self._move(BreakerState.HALF_OPEN)

    def _open(self, reason: str) -> None:
        self._reason = reason
        self._opened_at = self._clock()
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self._generation += 1
        # Each state starts from a clean slate: failures from before an
        # opening must not trip the breaker again as soon as it closes.
        self._consecutive = 0
        self._window.clear()
        self._probes_admitted = self._probe_successes = 0
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                # A broken log or metrics hook must not break the calls.
                log.exception("circuit breaker listener failed on %s -> %s", old, new)
