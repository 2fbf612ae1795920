"""`make demo`'s story against a whole mesh on free ports: every scripted outcome happens.

The story is the README's promise (two orders confirmed, a declined card and
an out-of-stock order cancelled, a retry returning the first order, four
notifications, one checkout traced across five services), so it is run here
as it runs for a user, only on this test's ports.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

from localmode.topology import REPO_ROOT, LocalService
from tests.conftest import JAEGER, require_tool
from tracing.provider import TracingHandle, build_tracer_provider

pytestmark = pytest.mark.e2e

StartStack = Callable[..., dict[str, LocalService]]
SERVICES = ["jaeger", "nats", "catalog", "inventory", "payments", "orders", "notifications"]


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo", REPO_ROOT / "scripts" / "demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("demo", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def test_the_demo_story_ends_as_scripted(start_stack: StartStack) -> None:
    require_tool(JAEGER)
    fast = {"OTEL_BSP_SCHEDULE_DELAY": "200"}
    mesh = start_stack(SERVICES, env={name: fast for name in SERVICES[2:]})
    demo = load_demo()
    jaeger = mesh["jaeger"]
    addresses = demo.Addresses(
        catalog=str(mesh["catalog"].grpc_target),
        orders=str(mesh["orders"].grpc_target),
        notifications=str(mesh["notifications"].grpc_target),
        otlp=f"http://127.0.0.1:{jaeger.ports[4317]}",
        jaeger=f"http://127.0.0.1:{jaeger.ports[16686]}",
    )
    provider = build_tracer_provider(
        "demo-client",
        "test",
        exporter=OTLPSpanExporter(endpoint=f"127.0.0.1:{jaeger.ports[4317]}", insecure=True),
    )
    lines: list[str] = []
    try:  # the demo's spans go to this test's Jaeger through the handle it is given
        status = await demo.run_story(addresses, TracingHandle(provider), out=lines.append)
    finally:
        provider.shutdown()
    output = "\n".join(lines)

    assert status == 0, output
    assert output.count("CONFIRMED ord-") == 3, output  # two orders and the retry
    assert output.count("CANCELLED ord-") == 2, output
    assert "card_declined" in output
    assert "out of stock" in output
    assert output.count("make trace ID=") >= 7
    for service in ("orders ", "catalog ", "inventory ", "payments ", "notifications "):
        assert f"\n{service}" in output or f" {service}" in output, (service, output)
