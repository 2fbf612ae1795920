"""What the span interceptor tests share: a traced server and channel, and the wait for spans."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.interceptors import Handler
from tracing.interceptors import client_interceptors, server_interceptors


@contextlib.asynccontextmanager
async def traced_channel(
    provider: TracerProvider,
    service: str,
    handlers: dict[str, Handler],
    also: Callable[[grpc.aio.Server], None] = lambda server: None,
) -> AsyncIterator[grpc.aio.Channel]:
    """A server of `handlers` (raw bytes) under `service`, plus what `also`
    adds, and a channel to it; spans of both sides go to `provider`."""
    server = grpc.aio.server(interceptors=server_interceptors(provider))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    also(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client_interceptors(provider)
        ) as channel:
            yield channel
    finally:
        await server.stop(None)


async def finished(exporter: InMemorySpanExporter, count: int) -> tuple[ReadableSpan, ...]:
    """The finished spans once there are ``count`` of them (bounded wait).

    ``context.abort`` sends the status to the client before the server span
    ends, so the client can see the error while that span is still open.
    """
    for _ in range(100):
        spans = exporter.get_finished_spans()
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.02)
    return exporter.get_finished_spans()
