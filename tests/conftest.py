"""Fixtures that start real processes of the topology on free ports.

Every test stack gets its own run directory and its own ports, so tests never
depend on or disturb a stack that `make up` started.

Services start plaintext here (MESH_MTLS=off, which the root conftest.py
sets for the whole session) unless a test asks for the
mesh's mTLS with `start_stack(..., mtls=True)`: the contract tests check each
service's API as any client sees it; tests/mesh checks mTLS and the policy,
and the end-to-end tests run the shop as deployed, with mTLS on. A stack with
mTLS on gets its own CA and certificates in `<run_dir>/certs`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from localmode.processes import Stack, free_port, start_all
from localmode.topology import REPO_ROOT, LocalService, Topology

GRPCURL = REPO_ROOT / ".tools" / "bin" / "grpcurl"
JAEGER = REPO_ROOT / ".tools" / "bin" / "jaeger"

StartStack = Callable[..., dict[str, LocalService]]

MTLS_OFF = {"MESH_MTLS": "off"}
MTLS_ON = {"MESH_MTLS": "on"}


def require_tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run 'make tools'")
    return path


@pytest.fixture(scope="session")
def topology() -> Topology:
    return Topology.load()


@pytest.fixture
def start_stack(topology: Topology, tmp_path: Path) -> Iterator[StartStack]:
    """Starts the named services on fresh ports; `env` adds variables per
    service; `mtls` turns the mesh's mTLS and authorization on for all of them;
    `replicas` runs that many processes of a service (default: compose.yaml's)."""
    stacks: list[Stack] = []

    def start(
        names: Sequence[str],
        env: Mapping[str, Mapping[str, str]] | None = None,
        *,
        mtls: bool = False,
        replicas: Mapping[str, int] | None = None,
    ) -> dict[str, LocalService]:
        """Keyed by process: a service, or each of its `replicas` (`catalog-2`...)."""
        chosen = topology if replicas is None else Topology.load(replicas=replicas)
        ports = {key: free_port() for key in chosen.default_ports()}
        run_dir = tmp_path / f"stack{len(stacks)}"
        services = []
        for name in names:
            for replica in chosen.replicas.get(name, [name]):
                service = chosen.resolve(replica, ports, run_dir)
                extra = {**(MTLS_ON if mtls else MTLS_OFF), **(env or {}).get(name, {})}
                services.append(
                    dataclasses.replace(service, environment={**service.environment, **extra})
                )
        stack = Stack(run_dir)
        stacks.append(stack)
        start_all(stack, services)
        return {service.name: service for service in services}

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="session")
def grpcurl() -> str:
    return str(require_tool(GRPCURL))


def which(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not on PATH")
    return found


# What the tests of a deployed stack (tests/compose, tests/kubernetes/cluster)
# measured: start-up times, memory, figures under load. Printed after the
# test summary, so CI logs carry them.
Measurements = list[tuple[str, str]]  # (label, value), in order
MEASUREMENTS = pytest.StashKey[Measurements]()


@pytest.fixture(scope="session")
def measurements(request: pytest.FixtureRequest) -> Measurements:
    return request.config.stash.setdefault(MEASUREMENTS, [])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(MEASUREMENTS, [])
    if not lines:
        return
    terminalreporter.section("measurements")
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        terminalreporter.write_line(f"{label:<{width}}  {value}")
