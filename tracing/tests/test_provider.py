"""configure_tracing: resource, batch export, the OTEL_SDK_DISABLED switch,
the OTEL_TRACES_EXPORTER choice.

No test sets the global tracer provider (OpenTelemetry allows that once per
process); they use ``set_global=False`` and the returned provider.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracing.provider
from mesh.config import ConfigError
from tracing.interceptors import client_interceptors, server_interceptors
from tracing.provider import build_resource, configure_tracing, tracing_disabled


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell may carry OTEL_* settings; these tests set their own.
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(name, raising=False)


def test_resource_carries_the_defaults_passed_in() -> None:
    attributes = build_resource("orders", "1.2.3").attributes

    assert attributes["service.name"] == "orders"
    assert attributes["service.version"] == "1.2.3"
    assert attributes["telemetry.sdk.language"] == "python"


def test_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "service.version=9.9.9,deployment.environment=ci"
    )
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-canary")

    attributes = build_resource("orders", "1.2.3").attributes

    assert attributes["service.name"] == "orders-canary"
    assert attributes["service.version"] == "9.9.9"
    assert attributes["deployment.environment"] == "ci"


def test_spans_reach_the_exporter_through_the_batch_processor() -> None:
    exporter = InMemorySpanExporter()
    handle = configure_tracing("orders", "1.2.3", set_global=False, exporter=exporter)
    assert handle.provider is not None
    tracer = handle.provider.get_tracer(__name__)

    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child"):
        pass
    # Batched: nothing is exported before a flush (or the schedule delay).
    assert handle.force_flush()
    handle.shutdown()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"parent", "child"}
    child_parent = spans["child"].parent
    assert child_parent is not None
    assert child_parent.span_id == spans["parent"].context.span_id
    assert spans["parent"].resource.attributes["service.name"] == "orders"


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_sdk_disabled_means_no_provider_and_no_interceptors(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)

    handle = configure_tracing("orders", "1.2.3", set_global=False)

    assert tracing_disabled()
    assert handle.provider is None
    assert not handle.enabled
    assert handle.force_flush()
    handle.shutdown()  # a no-op, must not raise
    assert server_interceptors() == []
    assert client_interceptors() == []


@pytest.mark.parametrize("value", ["false", "", "1"])
def test_other_values_leave_tracing_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # The spec names only "true" as disabling; "1" is not a boolean there.
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)

    handle = configure_tracing("orders", "1.2.3", set_global=False, exporter=InMemorySpanExporter())

    assert handle.enabled
    assert len(server_interceptors(handle.provider)) == 1
    assert len(client_interceptors(handle.provider)) == 4
    handle.shutdown()


class _Exporters:
    """Stands in for the OTLP exporter class: counts the exporters made."""

    def __init__(self) -> None:
        self.made: list[InMemorySpanExporter] = []

    def __call__(self) -> InMemorySpanExporter:
        self.made.append(InMemorySpanExporter())
        return self.made[-1]


@pytest.mark.parametrize("value", [None, "otlp", " OTLP "])
def test_the_otlp_exporter_is_the_default(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    exporters = _Exporters()
    monkeypatch.setattr(tracing.provider, "LeanOTLPSpanExporter", exporters)
    if value is not None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)

    handle = configure_tracing("orders", "1.2.3", set_global=False)
    assert handle.provider is not None
    with handle.provider.get_tracer(__name__).start_as_current_span("exported"):
        pass
    handle.force_flush()
    handle.shutdown()

    assert [[s.name for s in e.get_finished_spans()] for e in exporters.made] == [["exported"]]


@pytest.mark.parametrize("value", ["none", "NONE"])
def test_none_makes_and_samples_spans_but_exports_nothing(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    exporters = _Exporters()
    monkeypatch.setattr(tracing.provider, "LeanOTLPSpanExporter", exporters)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)

    handle = configure_tracing("orders", "1.2.3", set_global=False)
    assert handle.provider is not None
    with handle.provider.get_tracer(__name__).start_as_current_span("kept") as span:
        # Recorded and sampled as before, so the next hop still gets a sampled context.
        assert span.is_recording()
        assert span.get_span_context().trace_flags.sampled
    assert handle.force_flush()
    handle.shutdown()

    assert exporters.made == []
    assert len(server_interceptors(handle.provider)) == 1


@pytest.mark.parametrize("value", ["zipkin", "console", "otlp,none"])
@pytest.mark.parametrize("disabled", ["true", "false"])
def test_an_exporter_not_installed_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str, disabled: str
) -> None:
    # With tracing off too, as Go and TypeScript check it with their other variables.
    monkeypatch.setenv("OTEL_SDK_DISABLED", disabled)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)

    with pytest.raises(ConfigError) as raised:
        configure_tracing("orders", "1.2.3", set_global=False)

    assert str(raised.value) == f"OTEL_TRACES_EXPORTER must be one of otlp, none, got {value!r}"


_GLOBAL_CHECK = """
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tracing.provider import configure_tracing

handle = configure_tracing("orders", "1.2.3", exporter=InMemorySpanExporter())
assert trace.get_tracer_provider() is handle.provider
carrier = {}
with trace.get_tracer("t").start_as_current_span("s") as span:
    propagate.inject(carrier)
ctx = span.get_span_context()
# The flags byte is left out: this SDK sets W3C level 2's "random" bit too.
expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-"
print(sorted(carrier), carrier["traceparent"].startswith(expected))
"""


def test_set_global_installs_the_provider_and_w3c_propagation() -> None:
    # In a child process: the global provider can be set only once per process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", _GLOBAL_CHECK],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['traceparent'] True"
