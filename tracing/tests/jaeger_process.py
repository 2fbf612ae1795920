"""Run the real Jaeger binary with tracing/jaeger.yaml on free loopback ports.

Every listening address of the config is set through its JAEGER_* variable,
so an instance started here never touches a default port and several can
run side by side (or next to a developer's own Jaeger).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localmode.processes import Stack, free_port
from localmode.topology import REPO_ROOT, Topology

REPO = REPO_ROOT
JAEGER_BIN = REPO / ".tools" / "bin" / "jaeger"

# The variables tracing/jaeger.yaml reads for its listening addresses.
ENDPOINT_VARS = (
    "JAEGER_OTLP_GRPC_ENDPOINT",
    "JAEGER_OTLP_HTTP_ENDPOINT",
    "JAEGER_QUERY_HTTP_ENDPOINT",
    "JAEGER_QUERY_GRPC_ENDPOINT",
    "JAEGER_HEALTH_ENDPOINT",
)
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class JaegerProcess:
    pid: int
    ports: dict[str, int]  # by variable name
    log_path: Path

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['JAEGER_QUERY_HTTP_ENDPOINT']}"

    @property
    def otlp_grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['JAEGER_OTLP_GRPC_ENDPOINT']}"


@contextmanager
def run_jaeger(run_dir: Path) -> Iterator[JaegerProcess]:
    """A started, healthy Jaeger on free ports; stopped by its PID on exit.

    Started the way local mode starts it (compose.yaml's `jaeger` entry), so
    these tests also prove that entry sets every listening address.
    """
    topology = Topology.load()
    ports = {key: free_port() for key in topology.default_ports() if key[0] == "jaeger"}
    service = topology.resolve("jaeger", ports, run_dir)
    stack = Stack(run_dir)
    stack.start(service, timeout_s=START_TIMEOUT_S)
    try:
        pid = stack.pid("jaeger")
        assert pid is not None
        yield JaegerProcess(
            pid=pid,
            ports={
                name: int(service.environment[name].rsplit(":", 1)[1]) for name in ENDPOINT_VARS
            },
            log_path=stack.log_file("jaeger"),
        )
    finally:
        stack.stop()


def listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports the process listens on, read from /proc (Linux), like ``ss -ltnp``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = TCP_LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
