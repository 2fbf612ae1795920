"""Deadlines carried across every hop (issue 10, item 3).

grpc-python does not hand a call's deadline on to the calls its handler
makes: without help, a caller that gives up after 500 ms leaves the next hop
working for as long as it likes. Two interceptors carry it:

- `DeadlineScope` (server) puts the incoming call's absolute deadline in a
  context variable for as long as its handler runs (None when the caller set
  none). asyncio copies the context into every task the handler creates, so
  calls made from those tasks are bounded too.
- `DeadlinePropagation` (client; a channel takes its `interceptors()`, one
  per RPC shape) gives each outgoing call the smaller of its
  own timeout and the time the incoming call has left; when neither has one,
  `default_timeout_s` (the traffic policy's default). An outgoing call made
  after the incoming deadline passed fails at once with DEADLINE_EXCEEDED,
  without reaching the upstream: its answer could no longer be used.

A bounded outgoing call is cancelled by its own deadline, and gRPC sends that
cancellation to the upstream, so the whole chain stops at the client's
deadline. gRPC retries (service config) run inside the call, so they stay
within the bound too.

Deadlines are `time.monotonic()` seconds: immune to wall-clock steps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

import grpc

from mesh.interceptors import AroundEveryCall, rewriting_interceptors

__all__ = [
    "DeadlinePropagation",
    "DeadlineScope",
    "current_deadline",
    "incoming_deadline",
    "outgoing_timeout",
    "remaining",
]


# The deadline (time.monotonic()) of the call being served, None without one.
_deadline: ContextVar[float | None] = ContextVar("mesh_incoming_deadline", default=None)


def current_deadline() -> float | None:
    """The absolute deadline (`time.monotonic()`) of the call being served, if any."""
    return _deadline.get()


def remaining(now: float | None = None) -> float | None:
    """Seconds the call being served has left (negative once passed), None without a deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return deadline - (time.monotonic() if now is None else now)


@contextlib.contextmanager
def incoming_deadline(deadline: float | None) -> Iterator[None]:
    """Makes `deadline` the one outgoing calls are bounded by, inside the block.

    `DeadlineScope` uses it per call; `incoming_deadline(None)` detaches work
    that must outlive the call that started it (a compensation, say) from
    that call's deadline.
    """
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        # A streaming handler abandoned by its consumer is closed by asyncio's
        # async-generator finalizer in another context, where the token is
        # foreign; the variable dies with that context anyway.
        with contextlib.suppress(ValueError):
            _deadline.reset(token)


def outgoing_timeout(
    own: float | None, deadline: float | None, default: float | None, now: float
) -> float | None:
    """The timeout an outgoing call gets: its `own`, bounded by what is left
    until the incoming `deadline`; `default` when neither says anything."""
    if deadline is None:
        return default if own is None else own
    left = deadline - now
    return left if own is None else min(own, left)


class DeadlineScope(AroundEveryCall):
    """Holds each call's deadline in the context while its handler runs (every RPC shape)."""

    @contextlib.asynccontextmanager
    async def around(self, method: str, context: Any) -> AsyncIterator[None]:
        left: float | None = context.time_remaining()
        deadline = None if left is None else time.monotonic() + left
        with incoming_deadline(deadline):
            yield


def _method_name(method: str | bytes) -> str:
    # grpc.aio passes the method as bytes, despite grpc-stubs' `str`.
    return method.decode() if isinstance(method, bytes) else method


class DeadlinePropagation:
    """Bounds every outgoing call by the deadline of the call being served.

    A channel takes it as `interceptors()`: one interceptor per RPC shape,
    because grpc.aio files each interceptor under the first shape it
    implements only (an `isinstance` elif chain in `grpc.aio.Channel`), so a
    single class implementing all four would bound unary-unary calls alone.
    """

    def __init__(self, default_timeout_s: float | None = None) -> None:
        """`default_timeout_s`: the timeout of a call nobody bounded (None: none)."""
        if default_timeout_s is not None and not default_timeout_s > 0:
            raise ValueError(f"default_timeout_s must be above 0 or None, got {default_timeout_s}")
        self._default = default_timeout_s

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """For a channel's `interceptors`: after tracing's, so that a call failed
        here still gets its client span."""
        # In `rewriting_interceptors`' order: unary-unary first, then the
        # streaming shapes. A stream (a subscription such as
        # StreamNotifications) lasts as long as its caller wants: the incoming
        # call's deadline bounds it, the default timeout never does.
        return [
            *rewriting_interceptors(self.bounded)[:1],
            *rewriting_interceptors(self._bounded_stream)[1:],
        ]

    def _bounded_stream(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return self._bounded(details, None)

    def bounded(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        """`details` with the timeout the call gets; raises DEADLINE_EXCEEDED
        (an `AioRpcError`) when the incoming call's deadline has passed."""
        return self._bounded(details, self._default)

    def _bounded(
        self, details: grpc.aio.ClientCallDetails, default: float | None
    ) -> grpc.aio.ClientCallDetails:
        deadline = _deadline.get()
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            method = _method_name(details.method)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                f"the incoming call's deadline passed {now - deadline:.3f}s before calling "
                f"{method}: not called",
                None,
            )
        timeout = outgoing_timeout(details.timeout, deadline, default, now)
        if timeout == details.timeout:
            return details
        # grpc.aio's ClientCallDetails is a namedtuple; grpc-stubs declares a plain class.
        named: Any = details
        replaced: grpc.aio.ClientCallDetails = named._replace(timeout=timeout)
        return replaced
