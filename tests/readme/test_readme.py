"""The README's grpcurl commands, executed as written against `make up`.

This is the one test that uses the default ports, because the README does:
it fails with a clear message if they are taken instead of disturbing
whatever holds them. Each command runs in bash, as a reader would paste it,
so the gateway examples' `$(make -s token ...)` mints a real token.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from localmode.processes import port_in_use
from localmode.topology import REPO_ROOT, Topology
from tests.conftest import GRPCURL, require_tool

pytestmark = pytest.mark.readme

README = (REPO_ROOT / "README.md").read_text()
SERVICE_ON_PORT = {
    8080: "shop.orders.v1.OrdersService",  # the gateway: its public services
    50051: "shop.catalog.v1.CatalogService",
    50052: "shop.orders.v1.OrdersService",
    50053: "shop.inventory.v1.InventoryService",
    50054: "shop.payments.v1.PaymentsService",
    50055: "shop.notifications.v1.NotificationsService",
}


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)


def grpcurl_commands() -> list[str]:
    return [
        line.strip()
        for block in shell_blocks()
        for line in block.splitlines()
        if line.strip().startswith("grpcurl ")
    ]


def console_examples() -> list[tuple[str, str]]:
    """(command, expected output) pairs of the ```console blocks with one command."""
    pairs = []
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.DOTALL):
        lines = block.splitlines()
        commands = [i for i, line in enumerate(lines) if line.startswith("$ ")]
        if len(commands) == 1 and not lines[0].endswith("\\"):
            pairs.append((lines[0][2:], "\n".join(lines[1:])))
    return pairs


def run(command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{GRPCURL.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def default_stack() -> Iterator[None]:
    require_tool(GRPCURL)
    taken = sorted({port for (_, port) in Topology.load().default_ports() if port_in_use(port)})
    if taken:
        pytest.fail(
            f"the README test needs the default ports, but {taken} are in use: "
            "stop what holds them (for a local stack: make down) and rerun"
        )
    started = run("make up")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield
    finally:
        stopped = run("make down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_readme_has_the_two_commands() -> None:
    assert "make demo" in shell_blocks()[0]
    assert "make test" in shell_blocks()[0]


def test_readme_has_grpcurl_examples() -> None:
    commands = grpcurl_commands()
    assert any(command.endswith(" list") for command in commands)
    assert any(" describe " in command for command in commands)
    assert any(" -d " in command for command in commands)
    through_gateway = [command for command in commands if " localhost:8080 " in command]
    assert any(" list" in command for command in through_gateway)
    assert any("$(make -s token" in command for command in through_gateway)


@pytest.mark.usefixtures("default_stack")
@pytest.mark.parametrize("command", grpcurl_commands())
def test_grpcurl_command(command: str) -> None:
    result = run(command)
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    if command.endswith(" list"):
        port = int(command.split()[-2].rsplit(":", 1)[1])
        assert SERVICE_ON_PORT[port] in result.stdout
        assert "grpc.health.v1.Health" in result.stdout
        assert "grpc.reflection." in result.stdout
        if port == 8080:  # internal services stay behind the gateway
            assert "shop.catalog.v1.CatalogService" in result.stdout
            assert "shop.inventory.v1" not in result.stdout
            assert "shop.payments.v1" not in result.stdout
    if "GetProduct" in command:
        assert '"id": "prod-chemex"' in result.stdout
    if "GetStock" in command:
        assert '"productId": "prod-chemex"' in result.stdout
    if "Charge" in command:
        assert '"status": "PAYMENT_STATUS_' in result.stdout
    if "PlaceOrder" in command:  # more espresso machines than in stock: cancelled
        outcome = "CANCELLED" if "prod-espresso-machine" in command else "CONFIRMED"
        assert f'"status": "ORDER_STATUS_{outcome}"' in result.stdout
    if "GetOrder" in command or "ListOrders" in command:
        assert '"id": "ord-' in result.stdout
    if "Health/Check" in command:
        assert '"status": "SERVING"' in result.stdout


@pytest.mark.usefixtures("default_stack")
@pytest.mark.parametrize(("command", "expected"), console_examples())
def test_console_example(command: str, expected: str) -> None:
    result = run(command)
    assert expected.strip() in (result.stdout + result.stderr).strip(), result.stderr
