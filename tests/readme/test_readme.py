"""The README's grpcurl commands, executed as written against `make up`.

This is the one test that uses the default ports, because the README does:
it fails with a clear message if they are taken instead of disturbing
whatever holds them. Each command runs in bash, as a reader would paste it,
so the gateway examples' `$(make -s token ...)` mints a real token.

The commands of a section whose heading says "(mTLS off)" run against
`MESH_MTLS=off make up`, as that section tells the reader to start it; all
others against a plain `make up`, with mTLS on. The tests are grouped by
mode, so the mesh starts twice in all.
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


def sections() -> list[tuple[str, str]]:
    """(mode, text) of each `## ` section: "off" where its heading says (mTLS off)."""
    parts = re.split(r"^## ", README, flags=re.MULTILINE)
    return [("off" if "(mTLS off)" in part.splitlines()[0] else "on", part) for part in parts]


def grpcurl_commands() -> list[tuple[str, str]]:
    """(command, mode) of every grpcurl line in a ```sh block."""
    return [
        (line.strip(), mode)
        for mode, text in sections()
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
        for line in block.splitlines()
        if line.strip().startswith("grpcurl ")
    ]


def console_examples() -> list[tuple[str, str, str]]:
    """(command, expected output, mode) of the ```console blocks with one command."""
    found = []
    for mode, text in sections():
        for block in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL):
            lines = block.splitlines()
            commands = [i for i, line in enumerate(lines) if line.startswith("$ ")]
            if len(commands) == 1 and not lines[0].endswith("\\"):
                found.append((lines[0][2:], "\n".join(lines[1:]), mode))
    return found


def run(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{GRPCURL.parent}{os.pathsep}{os.environ['PATH']}", **extra}
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
def stack(request: pytest.FixtureRequest) -> Iterator[None]:
    """`make up` with MESH_MTLS as the parameter says (the session's own is off)."""
    require_tool(GRPCURL)
    taken = sorted({port for (_, port) in Topology.load().default_ports() if port_in_use(port)})
    if taken:
        pytest.fail(
            f"the README test needs the default ports, but {taken} are in use: "
            "stop what holds them (for a local stack: make down) and rerun"
        )
    started = run("make up", MESH_MTLS=request.param)
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
    assert any(command.endswith(" list") for command, _ in commands)
    assert any(" describe " in command for command, _ in commands)
    assert any(" -d " in command for command, _ in commands)
    # With mTLS on, a service's own port takes a client certificate, and only that.
    direct = [command for command, mode in commands if mode == "on" and ":8080 " not in command]
    assert direct
    assert all(" -cert .run/certs/" in command for command in direct)
    through_gateway = [command for command, _ in commands if " localhost:8080 " in command]
    assert any(" list" in command for command in through_gateway)
    assert any("$(make -s token" in command for command in through_gateway)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize(
    ("command", "stack"), grpcurl_commands(), indirect=["stack"], scope="module"
)
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


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize(
    ("command", "expected", "stack"), console_examples(), indirect=["stack"], scope="module"
)
def test_console_example(command: str, expected: str) -> None:
    result = run(command)
    assert expected.strip() in (result.stdout + result.stderr).strip(), result.stderr
