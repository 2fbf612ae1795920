"""Client spans for grpc.aio, written on the OpenTelemetry API for a lean hot path.

The counterpart of `tracing.server_spans`, and why it exists is the same:
the stock client interceptors ask the sampler and build a span even when the
current trace is not sampled, and set attributes one call at a time. Here a
call made inside an unsampled trace gets no span: the current context is
injected as it is, so the next hop receives the trace id and the "not
sampled" decision; any other call gets one CLIENT span, started with all its
attributes, whose context is what the next hop receives as `traceparent`.

One class per call shape, because grpc.aio files an interceptor object under
the first shape it implements only. A streaming call is returned as an async
iterator that ends the span when the stream does (grpc.aio keeps serving the
call's metadata and status from the call underneath), as the stock one did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from mesh.interceptors import (
    ClientContinuation,
    StreamStreamClient,
    StreamUnaryClient,
    UnaryStreamClient,
    UnaryUnaryClient,
)
from tracing.server_spans import rpc_attributes

__all__ = ["client_spans"]

Keep = Callable[[str], bool]
_STATUS_CODE = "rpc.grpc.status_code"


class _Spans:
    """Starts and ends the client spans of one channel's calls."""

    def __init__(self, tracer: Tracer, keep: Keep) -> None:
        self._tracer = tracer
        self._keep = keep
        self._attributes: dict[str, dict[str, str]] = {}

    def start(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[trace.Span | None, Context | None, grpc.aio.ClientCallDetails]:
        """The call's span and the context it is current in (both None when
        there is none to record), and its details carrying the trace context
        for the next hop."""
        method = details.method
        if isinstance(method, bytes):  # grpc.aio's client call details carry bytes
            method = method.decode()
        if not self._keep(method):
            return None, None, details
        current = trace.get_current_span().get_span_context()
        span = context = None
        carrier: dict[str, str] = {}
        if current.is_valid and not current.trace_flags.sampled:
            propagate.inject(carrier)  # the unsampled trace, passed on as it is
        else:
            attributes = self._attributes.get(method)
            if attributes is None:
                attributes = self._attributes.setdefault(method, rpc_attributes(method))
            span = self._tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
            context = trace.set_span_in_context(span)
            propagate.inject(carrier, context)
        # The context replaces any the caller passed along (the gateway forwards
        # its client's metadata): one traceparent per call, as W3C requires.
        kept = [(key, value) for key, value in details.metadata or () if key not in carrier]
        metadata = grpc.aio.Metadata(*kept, *carrier.items())
        return (
            span,
            context,
            grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            ),
        )

    @staticmethod
    def end(span: trace.Span, code: grpc.StatusCode, message: str | None) -> None:
        span.set_attribute(_STATUS_CODE, code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, message or code.name))
        span.end()

    def fail(self, span: trace.Span, error: BaseException) -> None:
        """Ends `span` for a call that raised `error`: its status, or CANCELLED
        when the caller gave up (a cancellation, a stream left unread)."""
        if isinstance(error, grpc.aio.AioRpcError):
            self.end(span, error.code(), error.details())
        else:
            self.end(span, grpc.StatusCode.CANCELLED, type(error).__name__)

    async def unary(self, continuation: ClientContinuation, details: Any, request: Any) -> Any:
        span, context, details = self.start(details)
        if span is None or context is None:
            return await continuation(details, request)
        # The span is current while the call starts, so that later interceptors
        # (the breaker's events) record on it.
        token = otel_context.attach(context)
        try:
            call = await continuation(details, request)
            try:
                code = await call.code()
            except asyncio.CancelledError:
                # Cancelling the intercepted call cancels only this task: end
                # the RPC under it too, so that the callee stops working.
                call.cancel()
                raise
        except BaseException as error:
            self.fail(span, error)
            raise
        finally:
            otel_context.detach(token)
        self.end(span, code, None if code is grpc.StatusCode.OK else await call.details())
        return call

    async def stream(self, continuation: ClientContinuation, details: Any, request: Any) -> Any:
        span, context, details = self.start(details)
        if span is None or context is None:
            return await continuation(details, request)
        token = otel_context.attach(context)
        try:
            call = await continuation(details, request)
        except BaseException as error:
            self.fail(span, error)
            raise
        finally:
            otel_context.detach(token)
        return self._responses(span, call)

    async def _responses(self, span: trace.Span, call: Any) -> AsyncIterator[Any]:
        try:
            async for response in call:
                yield response
        except BaseException as error:
            self.fail(span, error)
            raise
        code = await call.code()
        self.end(span, code, None if code is grpc.StatusCode.OK else await call.details())


class _UnaryUnary(UnaryUnaryClient):
    def __init__(self, spans: _Spans) -> None:
        self._spans = spans

    async def intercept_unary_unary(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._spans.unary(continuation, details, request)


class _UnaryStream(UnaryStreamClient):
    def __init__(self, spans: _Spans) -> None:
        self._spans = spans

    async def intercept_unary_stream(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._spans.stream(continuation, details, request)


class _StreamUnary(StreamUnaryClient):
    def __init__(self, spans: _Spans) -> None:
        self._spans = spans

    async def intercept_stream_unary(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._spans.unary(continuation, details, requests)


class _StreamStream(StreamStreamClient):
    def __init__(self, spans: _Spans) -> None:
        self._spans = spans

    async def intercept_stream_stream(
        self, continuation: ClientContinuation, details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._spans.stream(continuation, details, requests)


def client_spans(tracer: Tracer, keep: Keep) -> list[grpc.aio.ClientInterceptor]:
    """Client-span interceptors for the four call shapes of one channel."""
    spans = _Spans(tracer, keep)
    shapes: list[object] = [
        _UnaryUnary(spans),
        _UnaryStream(spans),
        _StreamUnary(spans),
        _StreamStream(spans),
    ]
    # grpc-stubs declares ClientInterceptor as a placeholder nothing matches.
    return cast("list[grpc.aio.ClientInterceptor]", shapes)
