"""Against the real Jaeger binary: the config, OTLP/gRPC export, API v3 and the CLI.

Nothing here mocks Jaeger. Skipped only when .tools/bin/jaeger is missing
(it is built by the project's tool installation, not by pytest).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.trace import SpanKind

from tracing.interceptors import client_interceptors, server_interceptors
from tracing.jaeger import find_traces, format_tree, get_trace, has_span, wait_for_trace
from tracing.provider import TracingHandle, configure_tracing
from tracing.tests.jaeger_process import (
    ENDPOINT_VARS,
    JAEGER_BIN,
    REPO,
    JaegerProcess,
    listening_tcp_ports,
    run_jaeger,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not JAEGER_BIN.exists(), reason=f"{JAEGER_BIN} not built (make tools)"),
]

WAIT_S = 20.0  # bound on how long a trace may take to become queryable


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JaegerProcess]:
    with run_jaeger(tmp_path_factory.mktemp("jaeger")) as instance:
        yield instance


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch, jaeger: JaegerProcess) -> None:
    """Point the standard OTEL_* variables (and only them) at the test's Jaeger."""
    for name in ("OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", jaeger.otlp_grpc_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracing", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_two_instances_run_side_by_side_on_their_own_ports_only(
    jaeger: JaegerProcess, tmp_path: Path
) -> None:
    with run_jaeger(tmp_path / "second") as second:
        for instance in (jaeger, second):
            expected = set(instance.ports.values())
            # Health answers once the extensions run; give the receivers a moment.
            deadline = time.monotonic() + 5
            while listening_tcp_ports(instance.pid) != expected and time.monotonic() < deadline:
                time.sleep(0.05)
            # Exactly the five configured ports: no default port (4317, 8888,
            # 13132, ...) is opened behind the config's back.
            assert listening_tcp_ports(instance.pid) == expected
        assert set(jaeger.ports.values()).isdisjoint(second.ports.values())
        assert len(jaeger.ports) == len(ENDPOINT_VARS)


@pytest.mark.usefixtures("otlp_env")
def test_spans_exported_by_configure_tracing_come_back_as_a_tree(jaeger: JaegerProcess) -> None:
    handle = configure_tracing("tracing-it", "0.0.1", set_global=False)
    assert handle.provider is not None
    tracer = handle.provider.get_tracer(__name__)
    child_attributes = {"rpc.grpc.status_code": 5}
    with (
        tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent,
        tracer.start_as_current_span("child", attributes=child_attributes),
    ):
        pass
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    handle.shutdown()  # flushes the batch processor

    trace = wait_for_trace(
        trace_id,
        timeout_s=WAIT_S,
        predicate=has_span("tracing-it", "child"),
        base_url=jaeger.query_url,
    )

    assert trace.edges() == {(("tracing-it", "parent"), ("tracing-it", "child"))}
    spans = {s.operation: s for s in trace.spans}
    assert spans["parent"].kind == "SERVER"
    assert spans["parent"].span_id == f"{parent.get_span_context().span_id:016x}"
    assert spans["child"].parent_span_id == spans["parent"].span_id
    assert spans["child"].attributes["rpc.grpc.status_code"] == 5

    result = _cli(trace_id, "--jaeger-url", jaeger.query_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}: 2 spans, 1 services")
    assert lines[1].startswith("tracing-it parent SERVER UNSET ")
    assert lines[2].startswith("└─ tracing-it child INTERNAL UNSET grpc=NOT_FOUND(5) ")
    assert lines[2].endswith(" ms")


async def test_grpc_calls_between_two_services_link_up_in_jaeger(
    otlp_env: None, jaeger: JaegerProcess
) -> None:
    caller = configure_tracing("it-caller", "0.0.1", set_global=False)
    callee = configure_tracing("it-callee", "0.0.1", set_global=False)

    async def lookup(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such product")

    server = grpc.aio.server(interceptors=server_interceptors(callee.provider))
    handler = grpc.unary_unary_rpc_method_handler(lookup)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("it.v1.Catalog", {"Lookup": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    assert caller.provider is not None
    tracer = caller.provider.get_tracer(__name__)
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client_interceptors(caller.provider)
        ) as channel:
            lookup_call = channel.unary_unary("/it.v1.Catalog/Lookup", None, None)  # raw bytes
            with (
                tracer.start_as_current_span("checkout") as root,
                pytest.raises(grpc.aio.AioRpcError),
            ):
                await lookup_call(b"", timeout=5)
    finally:
        await server.stop(None)
    trace_id = f"{root.get_span_context().trace_id:032x}"
    _shutdown(caller, callee)

    trace = await asyncio.to_thread(
        wait_for_trace,
        trace_id,
        timeout_s=WAIT_S,
        predicate=has_span("it-callee", "/it.v1.Catalog/Lookup"),
        base_url=jaeger.query_url,
    )

    method = "/it.v1.Catalog/Lookup"
    assert trace.edges() == {
        (("it-caller", "checkout"), ("it-caller", method)),
        (("it-caller", method), ("it-callee", method)),
    }
    server_line = next(line for line in format_tree(trace).splitlines() if "it-callee" in line)
    assert f"it-callee {method} SERVER UNSET grpc=NOT_FOUND(5) " in server_line


def _shutdown(*handles: TracingHandle) -> None:
    for handle in handles:
        handle.shutdown()


def test_an_unknown_trace_is_none_and_waiting_for_it_names_it(jaeger: JaegerProcess) -> None:
    unknown = "0123456789abcdef0123456789abcdef"

    assert get_trace(unknown, base_url=jaeger.query_url) is None
    with pytest.raises(TimeoutError, match=f"trace {unknown} not found in Jaeger at"):
        wait_for_trace(unknown, timeout_s=0.5, base_url=jaeger.query_url)

    result = _cli(unknown, "--jaeger-url", jaeger.query_url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"error: trace {unknown} not found in Jaeger at {jaeger.query_url}\n"


@pytest.mark.usefixtures("otlp_env")
def test_waiting_for_a_missing_service_names_what_is_there(jaeger: JaegerProcess) -> None:
    handle = configure_tracing("tracing-it", "0.0.1", set_global=False)
    assert handle.provider is not None
    with handle.provider.get_tracer(__name__).start_as_current_span("alone") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
    handle.shutdown()
    wait_for_trace(trace_id, timeout_s=WAIT_S, base_url=jaeger.query_url)

    with pytest.raises(TimeoutError) as caught:
        wait_for_trace(
            trace_id, timeout_s=0.5, predicate=has_span("orders"), base_url=jaeger.query_url
        )

    message = str(caught.value)
    assert "still lacks a span of service 'orders'" in message
    assert "tracing-it:alone" in message


@pytest.mark.usefixtures("otlp_env")
def test_find_traces_by_service_span_name_and_start_time(jaeger: JaegerProcess) -> None:
    handle = configure_tracing("tracing-find", "0.0.1", set_global=False)
    assert handle.provider is not None
    tracer = handle.provider.get_tracer(__name__)
    started = time.time_ns()
    with tracer.start_as_current_span("first") as first, tracer.start_as_current_span("inner"):
        pass
    between = time.time_ns()
    with tracer.start_as_current_span("second") as second:
        pass
    ended = time.time_ns()
    handle.shutdown()
    ids = [f"{s.get_span_context().trace_id:032x}" for s in (first, second)]
    for trace_id in ids:
        wait_for_trace(trace_id, timeout_s=WAIT_S, base_url=jaeger.query_url)

    def found(
        service: str, start: int = started, end: int = ended, operation: str | None = None
    ) -> list[list[str]]:
        traces = find_traces(
            service,
            start_min_ns=start,
            start_max_ns=end,
            operation=operation,
            base_url=jaeger.query_url,
        )
        return [[s.operation for s in t.spans] for t in traces]

    assert found("tracing-find") == [["first", "inner"], ["second"]]
    assert found("tracing-find", operation="inner") == [["first", "inner"]]
    assert found("tracing-find", start=between) == [["second"]]
    assert found("tracing-find", start=ended, end=time.time_ns()) == []
    assert found("no-such-service") == []
