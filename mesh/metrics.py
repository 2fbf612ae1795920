"""RED metrics (rate, errors, duration) for Prometheus, with OpenTelemetry's metrics SDK.

MESH_METRICS_ADDRESS (`host:port`) turns them on: `mesh.server.build_server`
starts one `MetricsEndpoint` per process, an HTTP listener that serves the
Prometheus text format at GET /metrics. Unset, nothing is measured and no
listener opens. What is measured (the names as OpenTelemetry writes them;
Prometheus shows dots as underscores, seconds as `_seconds` and counters
with `_total`):

- `rpc.server.call.duration` (s): every call the server handles, from its
  arrival to its status (injected delays, shed, denied and cancelled calls
  included; health and reflection too), by `rpc.service`, `rpc.method`,
  `rpc.grpc.status_code` (the code's name) and `mesh.caller` (the caller's
  mesh identity from its mTLS certificate, `unknown` without one). A call
  whose deadline passed while it ran counts as DEADLINE_EXCEEDED, one its
  caller gave up as CANCELLED. UNIMPLEMENTED calls count under `_OTHER` for
  service and method: their names come from the caller, without bound.
- `rpc.server.retry_attempts`: calls carrying `grpc-previous-rpc-attempts`,
  the header gRPC's retries add to every attempt after the first (gRPC A6).
- `rpc.client.call.duration` (s), from `client_interceptors(callee)`: the
  caller's side of each edge, by method, code and `mesh.callee`.
- `mesh.breaker.state` (0 closed, 1 half-open, 2 open), `mesh.breaker.rejected`
  and `mesh.breaker.transitions` (by `from` and `to`), from `watch_breaker`.
- `messaging.process.duration` (s), from `record_message`: each event a
  consumer handled, by `messaging.destination.name` (the subject) and
  `error.type` when it failed: the consumer's side of a hop over NATS.

Each endpoint has its own provider and Prometheus registry, and nothing is
made global: tests can run several, and the gRPC instrumentation's spans are
not affected. OTEL_SDK_DISABLED=true, which turns the SDK off, turns the
metrics off too (with a warning when MESH_METRICS_ADDRESS asked for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server

from mesh.breaker_interceptor import BreakerInterceptor
from mesh.certs import CertificateError, identity_of, service_of
from mesh.interceptors import (
    ServerInterceptor,
    WrappingInterceptor,
    wrap_every_shape,
)
from mesh.metrics_client import WatchedBreakers, edge_interceptors, split_method
from tracing.provider import build_resource, tracing_disabled

__all__ = [
    "DURATION_BUCKETS",
    "METRICS_ADDRESS_VARIABLE",
    "PREVIOUS_ATTEMPTS_HEADER",
    "Metrics",
    "MetricsEndpoint",
    "client_interceptors",
    "current",
    "serve_metrics",
    "watch_breaker",
]

log = logging.getLogger(__name__)

METRICS_ADDRESS_VARIABLE = "MESH_METRICS_ADDRESS"
# RPC latencies in seconds, the same in Go and TypeScript.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PREVIOUS_ATTEMPTS_HEADER = "grpc-previous-rpc-attempts"
UNKNOWN_CALLER = "unknown"
OTHER = "_OTHER"  # OpenTelemetry's name for a method the server does not know


@functools.lru_cache(maxsize=256)
def _caller_of_certificate(pem: bytes) -> str:
    try:
        return service_of(identity_of(pem))
    except (CertificateError, ValueError):
        return UNKNOWN_CALLER


def caller(context: Any) -> str:
    """The short mesh identity (`orders`) of the certificate the caller presented,
    or `unknown` (plaintext, or no identity of the shop's); cached per certificate."""
    certificates = (context.auth_context() or {}).get("x509_pem_cert") or ()
    return _caller_of_certificate(certificates[0]) if certificates else UNKNOWN_CALLER


def _server_code(context: Any, error: BaseException | None) -> str:
    """The name of the status a call that ended with `error` (None: returned) sends."""
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        # grpc.aio cancels the handler both when the deadline passes and when
        # the caller goes away; the deadline tells the two apart.
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return "UNKNOWN"  # what grpc.aio sends for an exception nothing mapped
    code = context.code()
    if code is None:
        return "OK"
    return str(code.name) if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name


class Metrics:
    """The instruments of one meter provider, and what records into them."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("mesh")
        self.server_duration = meter.create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="Duration of calls this server handled, arrival to status",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.retry_attempts = meter.create_counter(
            "rpc.server.retry_attempts",
            description="Calls that were a client's retry (grpc-previous-rpc-attempts set)",
        )
        self.client_duration = meter.create_histogram(
            "rpc.client.call.duration",
            unit="s",
            description="Duration of calls this process made, start to status",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.message_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of handling each message this consumer received",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._breakers = WatchedBreakers()
        meter.create_observable_gauge(
            "mesh.breaker.state",
            callbacks=[self._breakers.states],
            description="Circuit breaker state: 0 closed, 1 half-open, 2 open",
        )
        meter.create_observable_counter(
            "mesh.breaker.rejected",
            callbacks=[self._breakers.rejected],
            description="Calls a circuit breaker refused",
        )
        meter.create_observable_counter(
            "mesh.breaker.transitions",
            callbacks=[self._breakers.transitions],
            description="Circuit breaker state changes",
        )

    def server_interceptor(self) -> ServerInterceptor:
        return _ServerMetrics(self)

    def client_interceptors(self, callee: str) -> list[grpc.aio.ClientInterceptor]:
        return edge_interceptors(self.client_duration, callee)

    def watch_breaker(self, breaker: BreakerInterceptor) -> None:
        self._breakers.watch(breaker)

    def record_message(self, subject: str, seconds: float, error: str | None = None) -> None:
        """One message handled from `subject`; `error` names why it failed, if it did."""
        attributes = {"messaging.system": "nats", "messaging.destination.name": subject}
        if error is not None:
            attributes["error.type"] = error
        self.message_duration.record(seconds, attributes)


class _ServerMetrics(WrappingInterceptor):
    """Times every call, all four shapes, from the start of its handler to the
    end. First in the server's chain, so its handler wraps all the others and
    it sees the outcome of everything after it (tracing, shedding,
    authorization, faults)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        super().__init__(functools.partial(wrap_every_shape, around=self._measured))

    @contextlib.asynccontextmanager
    async def _measured(self, method: str, context: Any) -> AsyncIterator[None]:
        start = time.perf_counter()
        service, name = split_method(method)
        who = caller(context)
        metadata = context.invocation_metadata() or ()
        retried = any(key == PREVIOUS_ATTEMPTS_HEADER for key, _ in metadata)
        if retried:
            attributes = {"rpc.service": service, "rpc.method": name, "mesh.caller": who}
            self._metrics.retry_attempts.add(1, attributes)
        error: BaseException | None = None
        try:
            yield
        except BaseException as raised:
            error = raised
            raise
        finally:
            code = _server_code(context, error)
            if code == "UNIMPLEMENTED":
                service = name = OTHER
            self._metrics.server_duration.record(
                time.perf_counter() - start,
                {
                    "rpc.service": service,
                    "rpc.method": name,
                    "rpc.grpc.status_code": code,
                    "mesh.caller": who,
                },
            )


class MetricsEndpoint:
    """A meter provider whose metrics an HTTP listener serves at /metrics."""

    def __init__(self, address: str, service: str) -> None:
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusMetricReader(registry=self.registry)
        self.provider = MeterProvider(metric_readers=[reader], resource=build_resource(service))
        self.metrics = Metrics(self.provider)
        try:
            self._httpd, self._thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=self.registry
            )
        except OSError as error:
            self.provider.shutdown()
            raise OSError(
                f"cannot serve metrics on {METRICS_ADDRESS_VARIABLE}={address}: "
                f"{error.strerror or error}"
            ) from None
        self.port: int = self._httpd.server_port
        self._closed = False

    def close(self) -> None:
        """Stops the listener (blocks up to half a second) and the provider."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        self.provider.shutdown()
        global _current
        if _current is self.metrics:
            _current = None


# The process's metrics, once `serve_metrics` started them: what the channel
# helpers below record into.
_current: Metrics | None = None


def serve_metrics(address: str | None, service: str) -> MetricsEndpoint | None:
    """Starts the metrics listener on `address` (None: metrics off) for `service`
    (the resource's service.name unless OTEL_SERVICE_NAME says otherwise).

    The endpoint's metrics become the process's (`current`), which
    `client_interceptors` and `watch_breaker` record into.
    """
    global _current
    if address is None:
        return None
    if tracing_disabled():
        log.warning("%s=%s ignored: OTEL_SDK_DISABLED=true", METRICS_ADDRESS_VARIABLE, address)
        return None
    endpoint = MetricsEndpoint(address, service)
    _current = endpoint.metrics
    host = address.rpartition(":")[0]
    log.info("metrics for Prometheus at http://%s:%d/metrics", host, endpoint.port)
    return endpoint


def current() -> Metrics | None:
    """The process's metrics, or None when MESH_METRICS_ADDRESS is unset."""
    return _current


def client_interceptors(callee: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors, one per RPC shape, that time each call to `callee` into
    `rpc.client.call.duration`; [] while metrics are off (build the server,
    which starts them, before the channels)."""
    metrics = _current
    return [] if metrics is None else metrics.client_interceptors(callee)


def watch_breaker(breaker: BreakerInterceptor) -> None:
    """Exports `breaker`'s state, refusals and transitions; nothing while metrics are off."""
    metrics = _current
    if metrics is not None:
        metrics.watch_breaker(breaker)
