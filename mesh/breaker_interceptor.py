"""A circuit breaker (`mesh.breaker`) in front of one upstream's grpc.aio channel.

grpc.aio files an interceptor object under the first call shape it
implements only, so one class cannot guard all four: `BreakerInterceptor`
guards unary-unary calls and `interceptors()` gives it with three companions
for the streaming shapes, all sharing its one breaker.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import time
from collections.abc import AsyncIterable, Collection, Iterable
from typing import Any, cast

import grpc
from opentelemetry import trace

from mesh.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Clock,
    Permit,
    is_failure,
)
from mesh.interceptors import (
    ClientContinuation,
    StreamStreamClient,
    StreamUnaryClient,
    UnaryStreamClient,
    UnaryUnaryClient,
)

__all__ = ["BreakerInterceptor"]

log = logging.getLogger("mesh.breaker")


class BreakerInterceptor(UnaryUnaryClient):
    """A `CircuitBreaker` in front of one upstream channel.

    `name` names the upstream (`catalog`) in messages, logs and span events.
    An interceptor cannot see its channel's target, so give each upstream
    channel its own interceptor and do not share one between upstreams.
    While the breaker refuses a call, the call fails with UNAVAILABLE and
    details like "circuit breaker for catalog is open (5 consecutive
    failures); retry after 4.2 s". Each state change is logged, added as a
    `circuit_breaker.state_change` event to the current span, and counted in
    `transitions`. Refused calls are counted in `rejected`. Both counters are
    there for a metrics exporter to read.

    grpc.aio files an interceptor under the first RPC shape it implements
    only (an if/elif chain in `grpc/aio/_channel.py`), so one object cannot
    cover all four shapes. This object guards unary-unary calls. To guard
    every shape with the same breaker, pass `interceptors()` to the channel.
    Put them after the tracing interceptors in the channel's list, so that
    a refused call still gets a client span that carries its error.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        clock: Clock = time.monotonic,
        bypass: Collection[str] = (),
    ) -> None:
        """`bypass`: method paths (`/pkg.Service/Method`) that go through
        unguarded and uncounted, whatever the breaker's state."""
        self.name = name
        self.bypass = frozenset(bypass)
        self.breaker = CircuitBreaker(config, clock, [self._on_change])
        self.transitions: collections.Counter[tuple[BreakerState, BreakerState]] = (
            collections.Counter()
        )
        self.rejected = 0
        # Strong references to the tasks that settle streaming calls: the
        # event loop keeps only weak ones.
        self._settling: set[asyncio.Task[None]] = set()

    async def intercept_unary_unary(
        self,
        continuation: ClientContinuation,
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if self._bypassed(client_call_details):
            return await continuation(client_call_details, request)
        permit = self._admit()
        call = None
        try:
            call = await continuation(client_call_details, request)
            # Waiting here, in the call's own task, settles the outcome before
            # the caller sees it, so the next call meets the breaker's new state.
            code = await call.code()
        except grpc.aio.AioRpcError as error:  # a later interceptor ended it
            self._settle(permit, error.code())
            raise
        except BaseException:
            self.breaker.release(permit)
            if call is not None:
                # Cancelling the intercepted call only cancels this task.
                # Cancel the RPC under it too, so that the upstream stops working.
                call.cancel()
            raise
        self._settle(permit, code)
        return call

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """This interceptor and its streaming siblings, one per RPC shape, all
        sharing this breaker: the list to give the upstream's channel."""
        shapes: list[object] = [
            self,
            _UnaryStreamBreaker(self),
            _StreamUnaryBreaker(self),
            _StreamStreamBreaker(self),
        ]
        return cast("list[grpc.aio.ClientInterceptor]", shapes)

    async def _start_streaming(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Starts a call with a streaming side and returns it at once.

        The caller reads or writes while the call runs, so the outcome is
        settled when the call is done, in a task that keeps the caller's
        context and therefore its current span.
        """
        if self._bypassed(details):
            return await continuation(details, request)
        permit = self._admit()
        try:
            call = await continuation(details, request)
        except grpc.aio.AioRpcError as error:
            self._settle(permit, error.code())
            raise
        except BaseException:
            self.breaker.release(permit)
            raise
        context = contextvars.copy_context()

        def done(finished: Any) -> None:
            task = asyncio.get_running_loop().create_task(
                self._settle_when_done(permit, finished), context=context
            )
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

        call.add_done_callback(done)
        return call

    async def _settle_when_done(self, permit: Permit, call: Any) -> None:
        self._settle(permit, await call.code())

    def _bypassed(self, details: grpc.aio.ClientCallDetails) -> bool:
        if not self.bypass:
            return False
        method: str | bytes = details.method  # bytes in grpc.aio, despite grpc-stubs
        return (method.decode() if isinstance(method, bytes) else method) in self.bypass

    def _admit(self) -> Permit:
        permit = self.breaker.acquire()
        if permit is None:
            self.rejected += 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                self.refusal(),
                None,
            )
        return permit

    def refusal(self) -> str:
        """The details of a refused call: which breaker, why, and when to try again."""
        breaker = self.breaker
        if breaker.state is BreakerState.HALF_OPEN:
            probes = breaker.config.half_open_probes
            return (
                f"circuit breaker for {self.name} is half-open with all {probes} probe(s) "
                "in flight; retry shortly"
            )
        return (
            f"circuit breaker for {self.name} is open ({breaker.reason}); "
            f"retry after {breaker.retry_after():.1f} s"
        )

    def _settle(self, permit: Permit, code: grpc.StatusCode) -> None:
        failed = is_failure(code)
        if failed is None:
            self.breaker.release(permit)
        else:
            self.breaker.record(not failed, permit)

    def _on_change(self, old: BreakerState, new: BreakerState) -> None:
        self.transitions[(old, new)] += 1
        attributes = {
            "circuit_breaker.name": self.name,
            "circuit_breaker.previous_state": old.value,
            "circuit_breaker.state": new.value,
        }
        if new is BreakerState.OPEN:
            attributes["circuit_breaker.reason"] = self.breaker.reason
            log.warning(
                "circuit breaker for %s: %s -> %s (%s)", self.name, old, new, self.breaker.reason
            )
        else:
            log.info("circuit breaker for %s: %s -> %s", self.name, old, new)
        trace.get_current_span().add_event("circuit_breaker.state_change", attributes)


class _UnaryStreamBreaker(UnaryStreamClient):
    def __init__(self, owner: BreakerInterceptor) -> None:
        self._owner = owner

    async def intercept_unary_stream(
        self,
        continuation: ClientContinuation,
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._owner._start_streaming(continuation, client_call_details, request)


class _StreamUnaryBreaker(StreamUnaryClient):
    def __init__(self, owner: BreakerInterceptor) -> None:
        self._owner = owner

    async def intercept_stream_unary(
        self,
        continuation: ClientContinuation,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        return await self._owner._start_streaming(
            continuation, client_call_details, request_iterator
        )


class _StreamStreamBreaker(StreamStreamClient):
    def __init__(self, owner: BreakerInterceptor) -> None:
        self._owner = owner

    async def intercept_stream_stream(
        self,
        continuation: ClientContinuation,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        return await self._owner._start_streaming(
            continuation, client_call_details, request_iterator
        )
