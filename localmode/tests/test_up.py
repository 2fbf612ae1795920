"""`make up` starts only what is missing, and a zombie counts as missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localmode.__main__ import up
from localmode.processes import Stack, free_port, port_in_use
from localmode.topology import Topology


def web_topology(names: list[str]) -> Topology:
    """Services that are plain HTTP servers on free ports: quick to start and to probe."""
    services = {}
    for name in names:
        port = free_port()
        services[name] = {
            "ports": [f"{port}:{port}"],
            "x-local": {
                "command": [sys.executable, "-m", "http.server", str(port), "-b", "127.0.0.1"],
                "ready": f"http://{name}:{port}/",
            },
        }
    return Topology({"services": services})


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def kill_into_zombie(pid: int) -> None:
    """SIGKILL a child of this test without reaping it: it stays in state Z."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proc_state(pid) != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not become a zombie"
        time.sleep(0.02)


def wait_for_free_port(port: int) -> None:
    """Test ports come from the ephemeral range, where another connection of
    this busy process (a reconnecting channel of an earlier test, say) may
    hold one for a moment after its server died; the compose ports that
    `make up` uses lie below that range."""
    deadline = time.monotonic() + 30
    while port_in_use(port):
        if time.monotonic() > deadline:
            holders = subprocess.run(
                ["ss", "-tanp", f"( sport = :{port} or dport = :{port} )"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            pytest.fail(f"port {port} stayed in use:\n{holders.stdout}")
        time.sleep(0.05)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    yield stack
    stack.stop()


def test_a_zombie_counts_as_dead(stack: Stack) -> None:
    topology = web_topology(["web"])
    assert up(stack, topology) == 0
    pid = stack.pid("web")
    assert pid is not None
    kill_into_zombie(pid)
    # The zombie keeps its PID and start time: a check of those alone says "running".
    assert proc_state(pid) == "Z"
    assert not stack.alive("web")
    assert not Stack(stack.run_dir).alive("web")  # as a later `make up` sees it


def test_up_starts_only_the_missing_services(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = web_topology(["first", "second"])
    assert up(stack, topology) == 0
    first, second = stack.pid("first"), stack.pid("second")
    assert first is not None
    assert second is not None
    kill_into_zombie(second)
    wait_for_free_port(topology.compose_ports["second"][0])
    capsys.readouterr()

    later = Stack(stack.run_dir)  # as a second `make up` sees the run
    try:
        assert up(later, topology) == 0
        out = capsys.readouterr().out
        assert "already running: first" in out
        assert "second" in out.split("already running:")[1]  # reported as started
        assert stack.pid("first") == first, "a running service must not be restarted"
        restarted = stack.pid("second")
        assert restarted is not None
        assert restarted != second
    finally:
        later.stop()  # its own child: stopped and reaped here


def test_up_with_everything_running_starts_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = web_topology(["only"])
    assert up(stack, topology) == 0
    pid = stack.pid("only")
    capsys.readouterr()
    assert up(Stack(stack.run_dir), topology) == 0
    assert "already running: only" in capsys.readouterr().out
    assert stack.pid("only") == pid


def test_a_name_runs_once_per_stack(stack: Stack, tmp_path: Path) -> None:
    """A second process under a running name would have no PID file of its
    own, and `stop` would leave it running (the bench once did this)."""
    topology = web_topology(["web"])
    assert up(stack, topology) == 0
    ports = {("web", port): port for port in topology.compose_ports["web"]}
    again = topology.resolve("web", ports, tmp_path)
    with pytest.raises(ValueError, match="web is already running"):
        stack.start(again)


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    """Outgoing connections take their local ports from the ephemeral range:
    a port picked there could be gone before the service binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
    assert not any(port_in_use(port) for port in ports)
