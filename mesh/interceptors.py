"""Server interceptors every Python service installs.

- `UnexpectedErrors` turns an exception that escaped a servicer into INTERNAL
  with a generic message (logged with its trace), so no client ever sees
  UNKNOWN or a stack trace.
- `FaultInjection` delays or fails a share of calls, switched on per service
  by environment, to show deadlines, retries and breakers at work in Jaeger.

The health and reflection services are never touched: probes must tell the
truth about the process, not about the injected faults.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from mesh.config import ConfigError, Env

log = logging.getLogger(__name__)

_INFRASTRUCTURE_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    ServerInterceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
# Runs before the servicer method; may sleep or abort the call.
BeforeCall = Callable[[str, Any], Awaitable[None]]


def is_infrastructure(method: str) -> bool:
    return method.startswith(_INFRASTRUCTURE_PREFIXES)


async def _run_stream(behaviour: Any, request: Any, context: Any) -> AsyncIterator[Any]:
    """Runs a server-streaming method of either aio style: an async generator,
    or a coroutine that writes with `context.write` (the health Watch does)."""
    result = behaviour(request, context)
    if inspect.isawaitable(result):
        await result
        return
    async for response in result:
        yield response


def _wrap(handler: Handler, method: str, before: BeforeCall) -> Handler:
    """Returns `handler` with `before` run ahead of its unary or server-streaming body."""
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_call(request: Any, context: Any) -> Any:
            await before(method, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        async def stream_call(request: Any, context: Any) -> AsyncIterator[Any]:
            await before(method, context)
            async for response in _run_stream(stream, request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            stream_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class UnexpectedErrors(ServerInterceptor):
    """Maps exceptions the servicer did not handle to INTERNAL."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        async def internal(context: Any) -> None:
            log.exception("unhandled error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def guarded(request: Any, context: Any) -> Any:
                try:
                    return await unary(request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception:
                    await internal(context)

            return grpc.unary_unary_rpc_method_handler(
                guarded,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream: Any = handler.unary_stream

            async def guarded_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    async for response in _run_stream(stream, request, context):
                        yield response
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception:
                    await internal(context)

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


@dataclass(frozen=True)
class FaultConfig:
    """Faults to inject into this service's own RPCs; zero means off."""

    delay_ms: int = 0
    error_percent: float = 0.0

    @classmethod
    def from_env(cls, env: Env) -> FaultConfig:
        percent = env.number("FAULT_ERROR_PERCENT", 0.0, minimum=0.0)
        if percent > 100:
            raise ConfigError(f"FAULT_ERROR_PERCENT must be at most 100, got {percent}")
        return cls(delay_ms=env.integer("FAULT_DELAY_MS", 0, minimum=0), error_percent=percent)

    @property
    def enabled(self) -> bool:
        return self.delay_ms > 0 or self.error_percent > 0


class FaultInjection(ServerInterceptor):
    """Delays every call by `delay_ms`, then fails `error_percent` % with UNAVAILABLE."""

    def __init__(self, config: FaultConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()

    async def _before(self, method: str, context: Any) -> None:
        if self._config.delay_ms:
            await asyncio.sleep(self._config.delay_ms / 1000)
        if self._rng.uniform(0, 100) < self._config.error_percent:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"injected fault in {method}")

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_infrastructure(method):
            return handler
        return _wrap(handler, method, self._before)
