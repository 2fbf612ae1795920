"""The tracing interceptors every service installs: server spans and client spans.

They are ours (`tracing.server_spans`, `tracing.client_spans`), written on the
OpenTelemetry API, rather than opentelemetry-instrumentation-grpc's: those
cost a fifth of a service's throughput even for calls whose trace is not
sampled (the modules say where it went). Interceptors are passed explicitly
(``grpc.aio.server(interceptors=...)``, ``grpc.aio.insecure_channel(...,
interceptors=...)``) rather than installed by monkeypatching: the wiring
stays visible in each service, and tests can build servers and channels with
a provider of their own.

The gRPC health service and server reflection are never traced: probes and
grpcurl would otherwise bury the business spans in noise. Services named in
OTEL_PYTHON_GRPC_EXCLUDED_SERVICES (the stock instrumentation's variable,
kept so that operators' settings still work) are left out as well.

Both factories return an empty list when OTEL_SDK_DISABLED=true, so a service
built with them carries no tracing code on the request path at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast

import grpc
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from mesh.interceptors import INFRASTRUCTURE_SERVICE_PREFIXES
from tracing.client_spans import client_spans
from tracing.provider import tracing_disabled
from tracing.server_spans import ServerSpans

__all__ = ["EXCLUDED_SERVICE_PREFIXES", "client_interceptors", "server_interceptors"]

# Health and reflection: the same list the mesh's fault injection skips.
EXCLUDED_SERVICE_PREFIXES = INFRASTRUCTURE_SERVICE_PREFIXES
# The instrumentation scope of every gRPC span.
_SCOPE = "shopmesh.tracing.grpc"


def _rpc_filter() -> Callable[[str], bool]:
    """True for the methods (`/package.Service/Method`) to trace."""
    prefixes = tuple(EXCLUDED_SERVICE_PREFIXES)
    extra = os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "")
    names = frozenset(s.strip() for s in extra.split(",") if s.strip())

    def keep(method: str) -> bool:
        service = method.lstrip("/").partition("/")[0]
        return not (service.startswith(prefixes) or service in names)

    return keep


def server_interceptors(
    tracer_provider: TracerProvider | None = None,
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """The server-span interceptor, or [] when tracing is disabled.

    Server spans carry ``rpc.grpc.status_code`` (what ``context.abort`` or
    ``context.set_code`` left when the call ended, else OK) and continue the
    caller's trace from the W3C ``traceparent`` metadata. Following
    OpenTelemetry's gRPC conventions the span status is ERROR only for server
    faults (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
    DATA_LOSS); a NOT_FOUND stays UNSET, visible in the code attribute.
    Without ``tracer_provider`` the global provider is used.
    """
    if tracing_disabled():
        return []
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    return [cast("grpc.aio.ServerInterceptor[Any, Any]", ServerSpans(tracer, _rpc_filter()))]


def client_interceptors(
    tracer_provider: TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """Client-span interceptors for all four RPC shapes, or [] when tracing is disabled.

    They inject W3C ``traceparent`` into outgoing metadata, which is what links
    a downstream server span to its caller. Their place in the channel's list
    decides what a client span measures: first, it includes the work of every
    later interceptor.
    """
    if tracing_disabled():
        return []
    return client_spans(trace.get_tracer(_SCOPE, tracer_provider=tracer_provider), _rpc_filter())
