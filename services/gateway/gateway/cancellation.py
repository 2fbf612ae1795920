"""A client's cancellation must reach the upstream, also through client interceptors.

OpenTelemetry's aio client interceptor awaits a whole unary-response call
(unary and client streaming) inside the intercepted call's own task, and
cancelling an intercepted call cancels only that task, not the RPC under it:
without help, a client that gives up would leave the upstream working until
its deadline, if it has one. `capture_interceptors()`, the innermost
interceptor on the gateway's channels, sees the RPC itself and hands it to
the proxy's handler through a context variable (the interceptor's task
copies the handler task's context when it is created), and the handler
cancels it along with the intercepted call.

Streaming-response calls need none of this: the interceptor returns them
at once, and cancelling the intercepted call reaches the RPC.

grpc.aio files an interceptor object under the first call shape it
implements only, so the two shapes have a class each: `capture_interceptors()`
gives both.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, cast

import grpc

from mesh.interceptors import StreamUnaryClient, UnaryUnaryClient

__all__ = ["cancel", "capture", "capture_interceptors"]


_captured: ContextVar[list[Any] | None] = ContextVar("gateway_upstream_calls", default=None)


def capture() -> list[Any]:
    """The list the upstream calls started from the current task from now on land in."""
    calls: list[Any] = []
    _captured.set(calls)
    return calls


def cancel(call: Any, captured: list[Any] | None) -> None:
    """Cancels an (intercepted) call and the upstream RPCs captured under it."""
    call.cancel()
    for upstream in captured or ():
        upstream.cancel()


def capture_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Last in a channel's interceptors: they record each unary-response RPC started."""
    # grpc-stubs types client interceptors only partially: a cast, as for any.
    shapes: list[object] = [_CaptureUnaryUnary(), _CaptureStreamUnary()]
    return cast("list[grpc.aio.ClientInterceptor]", shapes)


class _CaptureUnaryUnary(UnaryUnaryClient):
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return _record(await continuation(client_call_details, request))


class _CaptureStreamUnary(StreamUnaryClient):
    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        return _record(await continuation(client_call_details, request_iterator))


def _record(call: Any) -> Any:
    calls = _captured.get()
    if calls is not None:
        calls.append(call)
    return call
