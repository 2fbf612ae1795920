"""Run the real Jaeger binary with tracing/jaeger.yaml on free loopback ports.

Every listening address of the config is set through its JAEGER_* variable,
so an instance started here never touches a default port and several can
run side by side (or next to a developer's own Jaeger).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JAEGER_BIN = REPO / ".tools" / "bin" / "jaeger"
JAEGER_CONFIG = REPO / "tracing" / "jaeger.yaml"

# The variables tracing/jaeger.yaml reads for its listening addresses.
ENDPOINT_VARS = (
    "JAEGER_OTLP_GRPC_ENDPOINT",
    "JAEGER_OTLP_HTTP_ENDPOINT",
    "JAEGER_QUERY_HTTP_ENDPOINT",
    "JAEGER_QUERY_GRPC_ENDPOINT",
    "JAEGER_HEALTH_ENDPOINT",
)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


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

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['JAEGER_HEALTH_ENDPOINT']}/status"


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel reports free now (all sockets open at once)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _log_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])


def _wait_healthy(process: subprocess.Popen[bytes], instance: JaegerProcess) -> float:
    """Seconds until GET /status answered 200; raises RuntimeError with the log otherwise."""
    started = time.monotonic()
    deadline = started + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"jaeger exited with {process.returncode}:\n{_log_tail(instance.log_path)}"
            )
        try:
            with urllib.request.urlopen(instance.health_url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or still starting (503)
        time.sleep(0.05)
    raise RuntimeError(
        f"jaeger not healthy within {START_TIMEOUT_S}s:\n{_log_tail(instance.log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def run_jaeger(log_path: Path) -> Iterator[JaegerProcess]:
    """A started, healthy Jaeger; stopped by its PID on exit (terminate, then kill)."""
    ports = dict(zip(ENDPOINT_VARS, free_ports(len(ENDPOINT_VARS)), strict=True))
    env = {**os.environ, **{name: f"127.0.0.1:{port}" for name, port in ports.items()}}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(JAEGER_BIN), "--config", str(JAEGER_CONFIG)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    instance = JaegerProcess(pid=process.pid, ports=ports, log_path=log_path)
    try:
        _wait_healthy(process, instance)
        yield instance
    finally:
        _stop(process)


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
