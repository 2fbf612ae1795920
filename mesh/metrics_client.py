"""The client's side of the mesh's RED metrics (`mesh.metrics`): each call to
an upstream timed by callee, and the circuit breakers' states and counts.

grpc.aio files an interceptor under the first call shape it implements only,
so `edge_interceptors` gives one per shape, sharing one recorder.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, cast

import grpc
from opentelemetry.metrics import CallbackOptions, Histogram, Observation

from mesh.breaker import BreakerState
from mesh.breaker_interceptor import BreakerInterceptor
from mesh.interceptors import (
    ClientContinuation,
    StreamStreamClient,
    StreamUnaryClient,
    UnaryStreamClient,
    UnaryUnaryClient,
)

__all__ = ["BREAKER_STATES", "WatchedBreakers", "edge_interceptors", "split_method"]

BREAKER_STATES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def split_method(method: str | bytes) -> tuple[str, str]:
    """(`package.Service`, `Method`) of `/package.Service/Method`."""
    # grpc.aio gives a client interceptor the method as bytes.
    text = method.decode() if isinstance(method, bytes) else method
    service, _, name = text.removeprefix("/").rpartition("/")
    return service, name


class _ClientRecorder:
    """What the four client interceptors of one callee share."""

    def __init__(self, histogram: Histogram, callee: str) -> None:
        self._histogram = histogram
        self._callee = callee
        # Strong references to the tasks that record streaming calls: the
        # event loop keeps only weak ones.
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, method: str | bytes, code: grpc.StatusCode, start: float) -> None:
        service, name = split_method(method)
        self._histogram.record(
            time.perf_counter() - start,
            {
                "rpc.service": service,
                "rpc.method": name,
                "rpc.grpc.status_code": code.name,
                "mesh.callee": self._callee,
            },
        )

    async def unary(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        start = time.perf_counter()
        call = await self._start(continuation, details, request, start)
        try:
            code = await call.code()
        except asyncio.CancelledError:
            # Cancelling the intercepted call only cancels this task: end the
            # RPC under it too, so that the callee stops working.
            call.cancel()
            self.record(details.method, grpc.StatusCode.CANCELLED, start)
            raise
        self.record(details.method, code, start)
        return call

    async def streaming(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Starts a call with a streaming side; it is recorded when it is done."""
        start = time.perf_counter()
        call = await self._start(continuation, details, request, start)
        context = contextvars.copy_context()

        async def record_when_done(finished: Any) -> None:
            self.record(details.method, await finished.code(), start)

        def done(finished: Any) -> None:
            loop = asyncio.get_running_loop()
            task = loop.create_task(record_when_done(finished), context=context)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(done)
        return call

    async def _start(
        self,
        continuation: ClientContinuation,
        details: grpc.aio.ClientCallDetails,
        request: Any,
        start: float,
    ) -> Any:
        try:
            return await continuation(details, request)
        except grpc.aio.AioRpcError as error:  # a later interceptor ended it (a breaker)
            self.record(details.method, error.code(), start)
            raise
        except asyncio.CancelledError:
            self.record(details.method, grpc.StatusCode.CANCELLED, start)
            raise


class _UnaryUnaryMetrics(UnaryUnaryClient):
    def __init__(self, recorder: _ClientRecorder) -> None:
        self._recorder = recorder

    async def intercept_unary_unary(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._recorder.unary(continuation, details, request)


class _UnaryStreamMetrics(UnaryStreamClient):
    def __init__(self, recorder: _ClientRecorder) -> None:
        self._recorder = recorder

    async def intercept_unary_stream(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._recorder.streaming(continuation, details, request)


class _StreamUnaryMetrics(StreamUnaryClient):
    def __init__(self, recorder: _ClientRecorder) -> None:
        self._recorder = recorder

    async def intercept_stream_unary(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._recorder.streaming(continuation, details, requests)


class _StreamStreamMetrics(StreamStreamClient):
    def __init__(self, recorder: _ClientRecorder) -> None:
        self._recorder = recorder

    async def intercept_stream_stream(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._recorder.streaming(continuation, details, requests)


class WatchedBreakers:
    """The breakers watched, read by the observable instruments' callbacks.

    The callbacks run in the HTTP listener's thread, so they never touch a
    `CircuitBreaker` (reading its `state` may change it; it is not
    thread-safe): a listener keeps each breaker's last state here, under a
    lock. An open breaker turns half-open lazily, on the next call that meets
    it, so the gauge shows open until then.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: weakref.WeakKeyDictionary[BreakerInterceptor, BreakerState] = (
            weakref.WeakKeyDictionary()
        )

    def watch(self, breaker: BreakerInterceptor) -> None:
        with self._lock:
            if breaker in self._states:
                return
            self._states[breaker] = breaker.breaker.state
        reference = weakref.ref(breaker)

        def on_change(old: BreakerState, new: BreakerState) -> None:
            watched = reference()
            if watched is not None:
                with self._lock:
                    self._states[watched] = new

        breaker.breaker.add_listener(on_change)

    def _watched(self) -> list[tuple[BreakerInterceptor, BreakerState]]:
        with self._lock:
            return list(self._states.items())

    def states(self, options: CallbackOptions) -> Iterable[Observation]:
        worst: dict[str, int] = {}  # several channels may share a name: the worst state
        for breaker, state in self._watched():
            worst[breaker.name] = max(worst.get(breaker.name, 0), BREAKER_STATES[state])
        return [Observation(value, {"mesh.callee": name}) for name, value in worst.items()]

    def rejected(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[str, int] = {}
        for breaker, _ in self._watched():
            totals[breaker.name] = totals.get(breaker.name, 0) + breaker.rejected
        return [Observation(value, {"mesh.callee": name}) for name, value in totals.items()]

    def transitions(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str, str], int] = {}
        for breaker, _ in self._watched():
            # dict.copy copies in C, under the GIL: no torn read of a Counter
            # the event loop's thread is updating.
            for (old, new), count in dict.copy(breaker.transitions).items():
                key = (breaker.name, old.value, new.value)
                totals[key] = totals.get(key, 0) + count
        return [
            Observation(count, {"mesh.callee": name, "from": old, "to": new})
            for (name, old, new), count in totals.items()
        ]


def edge_interceptors(histogram: Histogram, callee: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors, one per call shape, timing each call to `callee` into `histogram`."""
    recorder = _ClientRecorder(histogram, callee)
    shapes: list[object] = [
        _UnaryUnaryMetrics(recorder),
        _UnaryStreamMetrics(recorder),
        _StreamUnaryMetrics(recorder),
        _StreamStreamMetrics(recorder),
    ]
    return cast("list[grpc.aio.ClientInterceptor]", shapes)
