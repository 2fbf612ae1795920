"""OpenTelemetry tracer provider setup, configured by the standard OTEL_* variables.

Everything an operator may want to change (collector endpoint, TLS, headers,
timeouts, resource attributes, the kill switch) is read by the OpenTelemetry
SDK itself from its documented environment variables; this module only adds
the defaults a service knows about itself (its name and version).

``OTEL_SDK_DISABLED=true`` turns tracing off completely: no provider, no
exporter, no interceptors, so a benchmark can compare tracing on and off.
``OTEL_TRACES_EXPORTER`` picks the exporter as the specification names them:
``otlp`` (the default) or ``none``, which still makes and samples every span
and propagates its context but exports none (bench/tracing.md weighs making
spans against exporting them with it). Other exporters are not installed,
so naming one is a configuration error rather than a silent no-op.

OpenTelemetry lets a process set the global tracer provider only once, so
``configure_tracing`` takes ``set_global``: services keep the default, tests
pass ``set_global=False`` (or call ``build_tracer_provider``) and hand the
returned provider to the interceptor factories explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.environment_variables import OTEL_PROPAGATORS, OTEL_TRACES_EXPORTER
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mesh.config import ConfigError
from tracing.otlp_encoding import LeanOTLPSpanExporter

__all__ = [
    "TRACES_EXPORTERS",
    "TracingHandle",
    "build_resource",
    "build_tracer_provider",
    "configure_tracing",
    "tracing_disabled",
]


# The OTEL_TRACES_EXPORTER values this project installs an exporter for.
TRACES_EXPORTERS = ("otlp", "none")


def tracing_disabled() -> bool:
    """Whether OTEL_SDK_DISABLED asks for no tracing at all (the spec's "true", any case)."""
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"


def build_resource(service_name: str, service_version: str | None = None) -> Resource:
    """The resource describing this process.

    ``Resource.create`` lets its arguments win over OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES; we want the opposite (the passed values are only
    defaults, an operator's environment overrides them), so the environment
    detector's result is merged last. The metrics endpoint (mesh.metrics)
    knows the service's name but not its version.
    """
    attributes = {SERVICE_NAME: service_name}
    if service_version is not None:
        attributes[SERVICE_VERSION] = service_version
    defaults = Resource.create(attributes)
    return defaults.merge(OTELResourceDetector().detect())


def traces_exporter() -> str:
    """OTEL_TRACES_EXPORTER's choice, `otlp` when unset; ConfigError for one not installed."""
    choice = os.environ.get(OTEL_TRACES_EXPORTER, "").strip().lower() or "otlp"
    if choice not in TRACES_EXPORTERS:
        raise ConfigError(
            f"{OTEL_TRACES_EXPORTER} must be one of {', '.join(TRACES_EXPORTERS)}, got {choice!r}"
        )
    return choice


def build_tracer_provider(
    service_name: str,
    service_version: str,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A tracer provider with a batch processor in front of ``exporter``.

    Without ``exporter`` this is what OTEL_TRACES_EXPORTER asks for: the OTLP
    gRPC exporter (with requests encoded by ``tracing.otlp_encoding``) with no
    arguments, which reads
    OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _INSECURE, _HEADERS, _TIMEOUT,
    _COMPRESSION and _CERTIFICATE itself, or with ``none`` no processor at
    all. Never sets anything global.
    """
    provider = TracerProvider(resource=build_resource(service_name, service_version))
    if exporter is None and traces_exporter() == "none":
        return provider
    # Batch export keeps the export off the request path (DESIGN: tracing uses
    # batch export); its queue and delay follow OTEL_BSP_* variables.
    provider.add_span_processor(BatchSpanProcessor(exporter or LeanOTLPSpanExporter()))
    return provider


@dataclass(frozen=True)
class TracingHandle:
    """What ``configure_tracing`` set up; ``provider`` is None when tracing is disabled."""

    provider: TracerProvider | None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span now; True when that succeeded (or nothing to do)."""
        if self.provider is None:
            return True
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush pending spans and stop the exporter; call once on process exit."""
        if self.provider is not None:
            self.provider.shutdown()


def configure_tracing(
    service_name: str,
    service_version: str,
    *,
    set_global: bool = True,
    exporter: SpanExporter | None = None,
) -> TracingHandle:
    """Set up tracing for one service process, or nothing when OTEL_SDK_DISABLED=true.

    With ``set_global`` the provider becomes the process-wide one (OpenTelemetry
    ignores, with a logged warning, any second attempt) and W3C trace context
    plus baggage become the propagators unless OTEL_PROPAGATORS chose others.
    """
    # Checked even with tracing off, as every other variable is at start.
    traces_exporter()
    if tracing_disabled():
        return TracingHandle(provider=None)
    provider = build_tracer_provider(service_name, service_version, exporter)
    if set_global:
        trace.set_tracer_provider(provider)
        if not os.environ.get(OTEL_PROPAGATORS):
            # The same as OpenTelemetry's default, set explicitly so that the
            # wire format does not depend on what imported opentelemetry first.
            propagate.set_global_textmap(
                CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
            )
    return TracingHandle(provider=provider)
