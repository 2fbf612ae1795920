"""Fixtures that start real processes of the topology on free ports.

Every test stack gets its own run directory and its own ports, so tests never
depend on or disturb a stack that `make up` started.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from localmode.processes import Stack, free_port, start_all
from localmode.topology import REPO_ROOT, LocalService, Topology

GRPCURL = REPO_ROOT / ".tools" / "bin" / "grpcurl"
JAEGER = REPO_ROOT / ".tools" / "bin" / "jaeger"

StartStack = Callable[..., dict[str, LocalService]]


def require_tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run 'make tools'")
    return path


@pytest.fixture(scope="session")
def topology() -> Topology:
    return Topology.load()


@pytest.fixture
def start_stack(topology: Topology, tmp_path: Path) -> Iterator[StartStack]:
    """Starts the named services on fresh ports; `env` adds variables per service."""
    stacks: list[Stack] = []

    def start(
        names: Sequence[str], env: Mapping[str, Mapping[str, str]] | None = None
    ) -> dict[str, LocalService]:
        ports = {key: free_port() for key in topology.default_ports()}
        run_dir = tmp_path / f"stack{len(stacks)}"
        services = []
        for name in names:
            service = topology.resolve(name, ports, run_dir)
            extra = dict((env or {}).get(name, {}))
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
