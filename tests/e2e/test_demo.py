"""`make demo`'s story against a whole mesh on free ports: every scripted outcome happens.

The story is the README's promise (every call through the gateway with the
shopper's token, two orders confirmed, a declined card and an out-of-stock
order cancelled, a retry returning the first order, four notifications, one
trace per call rooted at the gateway, one checkout traced across the gateway
and five services), so it is run here as it runs for a user, only on this
test's ports.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType

import pytest

from gateway.config import AuthConfig
from localmode.topology import REPO_ROOT, LocalService
from mesh.config import Env
from tests.conftest import JAEGER, require_tool

pytestmark = pytest.mark.e2e

StartStack = Callable[..., dict[str, LocalService]]
SERVICES = [
    "jaeger", "nats", "catalog", "inventory", "payments", "orders", "notifications", "gateway"
]  # fmt: skip


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
    # As `make demo` runs it: mTLS and the policy on behind the gateway.
    mesh = start_stack(SERVICES, env={name: fast for name in SERVICES[2:]}, mtls=True)
    demo = load_demo()
    gateway = mesh["gateway"]
    addresses = demo.Addresses(
        gateway=str(gateway.grpc_target),
        jaeger=f"http://127.0.0.1:{mesh['jaeger'].ports[16686]}",
    )
    # The keys the gateway process reads: its environment over this one's.
    auth = AuthConfig.from_env(Env({**os.environ, **gateway.environment}))
    lines: list[str] = []
    status = await demo.run_story(addresses, auth, out=lines.append)
    output = "\n".join(lines)

    assert status == 0, output
    assert output.count("CONFIRMED ord-") == 3, output  # two orders and the retry
    assert output.count("CANCELLED ord-") == 2, output
    assert "card_declined" in output
    assert "out of stock" in output
    assert output.count("make trace ID=") == 8, output  # one per call, and the checkout's
    tree = output.split("One checkout")[1].splitlines()[2:]
    assert tree[0].startswith("gateway /shop.orders.v1.OrdersService/PlaceOrder SERVER "), output
    assert "missing" not in "\n".join(tree), output  # every parent is in the trace
    for service in ("orders ", "catalog ", "inventory ", "payments ", "notifications "):
        assert any(f"─ {service}" in line for line in tree), (service, output)
