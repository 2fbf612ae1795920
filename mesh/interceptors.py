"""Server interceptors every Python service installs.

- `UnexpectedErrors` turns an exception that escaped a servicer into INTERNAL
  with a generic message (logged with its trace), so no client ever sees
  UNKNOWN or a stack trace.
- `FaultInjection` delays or fails a share of calls, as the environment or
  the fault file says (`mesh.faults`), to show deadlines, retries and
  breakers at work in Jaeger.

The health and reflection services are never touched: probes must tell the
truth about the process, not about the injected faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc

# FaultConfig is re-exported: services and tests import it from here.
from mesh.faults import FaultConfig as FaultConfig
from mesh.faults import FaultFile, Faults

log = logging.getLogger(__name__)

# Prefixes of the fully qualified gRPC services that probes and tools call
# (health, and reflection v1 and v1alpha): never faulted here, never traced
# (tracing/interceptors.py reads the same tuple).
INFRASTRUCTURE_SERVICE_PREFIXES = ("grpc.health.v1.", "grpc.reflection.")

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    ServerInterceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
# Client interceptor bases, one per call shape. grpc.aio files an interceptor
# object under the first shape it implements only, so a client interceptor
# that must see every call is one class per shape (mesh.deadlines,
# mesh.breaker_interceptor, the gateway's cancellation capture).
if TYPE_CHECKING:
    UnaryUnaryClient = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    UnaryStreamClient = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    StreamUnaryClient = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    StreamStreamClient = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    UnaryUnaryClient = grpc.aio.UnaryUnaryClientInterceptor
    UnaryStreamClient = grpc.aio.UnaryStreamClientInterceptor
    StreamUnaryClient = grpc.aio.StreamUnaryClientInterceptor
    StreamStreamClient = grpc.aio.StreamStreamClientInterceptor
ClientContinuation = Callable[[grpc.aio.ClientCallDetails, Any], Any]
Rewrite = Callable[[grpc.aio.ClientCallDetails], grpc.aio.ClientCallDetails]


def rewriting_interceptors(rewrite: Rewrite) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors, one per call shape, that start every call with the
    details `rewrite` gives (which may raise an AioRpcError to fail it)."""
    shapes: list[object] = [
        _RewriteUnaryUnary(rewrite),
        _RewriteUnaryStream(rewrite),
        _RewriteStreamUnary(rewrite),
        _RewriteStreamStream(rewrite),
    ]
    # grpc-stubs declares ClientInterceptor as a placeholder nothing matches.
    return cast("list[grpc.aio.ClientInterceptor]", shapes)


class _RewriteUnaryUnary(UnaryUnaryClient):
    def __init__(self, rewrite: Rewrite) -> None:
        self._rewrite = rewrite

    async def intercept_unary_unary(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._rewrite(details), request)


class _RewriteUnaryStream(UnaryStreamClient):
    def __init__(self, rewrite: Rewrite) -> None:
        self._rewrite = rewrite

    async def intercept_unary_stream(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._rewrite(details), request)


class _RewriteStreamUnary(StreamUnaryClient):
    def __init__(self, rewrite: Rewrite) -> None:
        self._rewrite = rewrite

    async def intercept_stream_unary(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(self._rewrite(details), requests)


class _RewriteStreamStream(StreamStreamClient):
    def __init__(self, rewrite: Rewrite) -> None:
        self._rewrite = rewrite

    async def intercept_stream_stream(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(self._rewrite(details), requests)


# Wraps a servicer method's body: (method, context) -> async context manager.
Around = Callable[[str, Any], contextlib.AbstractAsyncContextManager[None]]


def is_infrastructure(method: str) -> bool:
    """Whether `method` (`/package.Service/Method`) belongs to health or reflection."""
    return method.removeprefix("/").startswith(INFRASTRUCTURE_SERVICE_PREFIXES)


async def _run_stream(behaviour: Any, request: Any, context: Any) -> AsyncIterator[Any]:
    """Runs a server-streaming method of either aio style: an async generator,
    or a coroutine that writes with `context.write` (the health Watch does)."""
    result = behaviour(request, context)
    if inspect.isawaitable(result):
        await result
        return
    async for response in result:
        yield response


def _wrap(handler: Handler, method: str, around: Around) -> Handler:
    """Returns `handler` with its unary or server-streaming body run inside `around`."""
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_call(request: Any, context: Any) -> Any:
            async with around(method, context):
                return await unary(request, context)
            raise AssertionError("around swallowed an exception")  # it never does

        return grpc.unary_unary_rpc_method_handler(
            unary_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        async def stream_call(request: Any, context: Any) -> AsyncIterator[Any]:
            async with around(method, context):
                async for response in _run_stream(stream, request, context):
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            stream_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def wrap_every_shape(handler: Handler, method: str, around: Around) -> Handler:
    """`_wrap`, and client-streaming and bidirectional bodies run inside `around` too.

    `_wrap` leaves those two shapes alone, which suits error mapping and fault
    injection; a check every call must pass (authorization) needs all four.
    """
    if handler.stream_unary is not None:
        client_stream: Any = handler.stream_unary

        async def client_stream_call(requests: Any, context: Any) -> Any:
            async with around(method, context):
                return await client_stream(requests, context)
            raise AssertionError("around swallowed an exception")  # it never does

        return grpc.stream_unary_rpc_method_handler(
            client_stream_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        bidi: Any = handler.stream_stream

        async def bidi_call(requests: Any, context: Any) -> AsyncIterator[Any]:
            async with around(method, context):
                async for response in _run_stream(bidi, requests, context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(
            bidi_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return _wrap(handler, method, around)


@contextlib.asynccontextmanager
async def _internal_on_error(method: str, context: Any) -> AsyncIterator[None]:
    try:
        yield
    except (grpc.aio.AbortError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")


# Wrapped handlers kept per method; past this many methods (a client making up
# method names under a generic handler, say) new ones are wrapped per call.
_MAX_CACHED_METHODS = 1024


class HandlerCache:
    """Each method's handler wrapped once and reused, not rebuilt on every call.

    grpc.aio asks every interceptor for the handler of every call. The
    servicer's handler for a method is the same object each time, so when
    each interceptor keeps what it built from it, the whole chain hands back
    the same wrapped handler: no new closures and handler tuples per call per
    interceptor. A handler that differs from the one kept (a generic handler
    that builds one per call) is wrapped afresh and replaces it.
    """

    def __init__(self, wrap: Callable[[Handler, str], Handler]) -> None:
        self._wrap = wrap
        self._by_method: dict[str, tuple[Handler, Handler]] = {}

    def get(self, handler: Handler, method: str) -> Handler:
        kept = self._by_method.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(handler, method)
        if kept is not None or len(self._by_method) < _MAX_CACHED_METHODS:
            self._by_method[method] = (handler, wrapped)
        return wrapped


class WrappingInterceptor(ServerInterceptor):
    """Hands grpc.aio each method's handler as `wrap(handler, method)` made
    it, once per method (`HandlerCache`)."""

    def __init__(self, wrap: Callable[[Handler, str], Handler]) -> None:
        self._handlers = HandlerCache(wrap)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # grpc answers UNIMPLEMENTED without a handler
            return handler
        return self._handlers.get(handler, handler_call_details.method)


class AroundEveryCall(ServerInterceptor):
    """Runs `around(method, context)`, an async context manager, around the
    handler of every call of every RPC shape (`wrap_every_shape`); with
    `skip_infrastructure`, health and reflection calls run without it."""

    skip_infrastructure = False
    _handlers: HandlerCache | None = None

    def around(self, method: str, context: Any) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or (self.skip_infrastructure and is_infrastructure(method)):
            return handler
        if self._handlers is None:
            self._handlers = HandlerCache(functools.partial(wrap_every_shape, around=self.around))
        return self._handlers.get(handler, method)


class UnexpectedErrors(WrappingInterceptor):
    """Maps exceptions the servicer did not handle to INTERNAL."""

    def __init__(self) -> None:
        super().__init__(functools.partial(_wrap, around=_internal_on_error))


class FaultInjection(WrappingInterceptor):
    """Delays or fails calls as `mesh.faults` rules say: the fault file's rule
    for the method (when `file` is given), else the environment's `config`."""

    def __init__(
        self,
        config: FaultConfig,
        rng: random.Random | None = None,
        file: FaultFile | None = None,
    ) -> None:
        self.faults = Faults(config, file, rng)
        super().__init__(self._wrap_unless_infrastructure)

    def _wrap_unless_infrastructure(self, handler: Handler, method: str) -> Handler:
        return handler if is_infrastructure(method) else _wrap(handler, method, self.faults.inject)
