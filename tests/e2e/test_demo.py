"""`make demo`'s story against a whole mesh on free ports: every scripted outcome happens.

The story is the README's promise (every call through the gateway with the
shopper's token, two orders confirmed, a declined card and an out-of-stock
order cancelled, a retry returning the first order, four notifications, one
trace per call rooted at the gateway, one checkout traced across the gateway
and five services), so it is run here as it runs for a user, only on this
test's ports.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from demo import story
from gateway.config import AuthConfig
from localmode.topology import LocalService
from mesh.config import Env
from tests.conftest import JAEGER, require_tool

pytestmark = pytest.mark.e2e

StartStack = Callable[..., dict[str, LocalService]]
SERVICES = [
    "jaeger", "nats", "catalog", "inventory", "payments", "orders", "notifications", "gateway"
]  # fmt: skip


async def test_the_demo_story_ends_as_scripted(start_stack: StartStack, tmp_path: Path) -> None:
    require_tool(JAEGER)
    faults = tmp_path / "faults.yaml"  # this stack's, for the resilience act
    env = {"OTEL_BSP_SCHEDULE_DELAY": "200", "MESH_FAULTS_FILE": str(faults)}
    # As `make demo` runs it: mTLS and the policy on behind the gateway.
    mesh = start_stack(SERVICES, env={name: env for name in SERVICES[2:]}, mtls=True)
    gateway = mesh["gateway"]
    addresses = story.Addresses(
        gateway=str(gateway.grpc_target),
        jaeger=f"http://127.0.0.1:{mesh['jaeger'].ports[16686]}",
        faults=faults,
    )
    # The keys the gateway process reads: its environment over this one's.
    auth = AuthConfig.from_env(Env({**os.environ, **gateway.environment}))
    lines: list[str] = []
    status = await story.run_story(addresses, auth, out=lines.append)
    output = "\n".join(lines)

    assert status == 0, output
    assert output.count("CONFIRMED ord-") == 3, output  # two orders and the retry
    assert output.count("CANCELLED ord-") == 2, output
    assert "card_declined" in output
    assert "out of stock" in output
    assert output.count("make trace ID=") == 12, output  # one per call, and the checkout's
    # The resilience act: retries, the breaker opening and closing, a deadline.
    assert "the gateway retried them" in output, output
    assert "then at once: UNAVAILABLE: circuit breaker for catalog is open" in output, output
    assert "OK: the half-open probe reached catalog" in output, output
    assert "DEADLINE_EXCEEDED after" in output, output
    assert not faults.read_text().count("delay_ms"), "the act clears its faults"
    tree = output.split("One checkout")[1].splitlines()[2:]
    assert tree[0].startswith("gateway /shop.orders.v1.OrdersService/PlaceOrder SERVER "), output
    assert "missing" not in "\n".join(tree), output  # every parent is in the trace
    for service in ("orders ", "catalog ", "inventory ", "payments ", "notifications "):
        assert any(f"─ {service}" in line for line in tree), (service, output)
