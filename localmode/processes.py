"""Starts local-mode services as background processes and stops them by PID.

Each started process is recorded in `<run_dir>/pids/<name>.json` with its PID
and its start time from /proc, so `down` stops exactly what `up` started and
never a process that later reused the PID. Logs go to `<run_dir>/logs/`.

A service whose environment turns the mesh's mTLS on (MESH_MTLS, on by
default) gets the certificates it needs made first when they are missing or
due (`mesh.certs.ensure` in its MESH_CERTS_DIR), and is probed for readiness
over mTLS as itself, as its compose healthcheck does.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from localmode.topology import REPO_ROOT, LocalService
from mesh.certs import certs_dir_from_env, ensure
from mesh.config import ConfigError, Env
from mesh.probe import is_serving
from mesh.tls import MTLS_DEFAULT, MeshSecurity


class StartError(RuntimeError):
    """A service exited or did not become ready in time."""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/PID/stat (state first), or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces, so split after it.
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far, all its threads
    counted (fields 14 and 15); ProcessLookupError if it is gone."""
    fields = _proc_stat(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_ticks(pid: int) -> str | None:
    """The start time in clock ticks since boot (field 22) of a running process.

    None if it is gone or a zombie: PID 1 on these machines does not reap
    orphans, so a killed service can linger in state Z with its PID and start
    time intact, although it serves nothing. One read of /proc, so a process
    that exits meanwhile cannot make a second read fail.
    """
    fields = _proc_stat(pid)
    return None if fields is None or fields[0] == "Z" else fields[19]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _ephemeral_low(default: int = 32768) -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


# Ports are picked below the kernel's ephemeral range, not from it (as binding
# port 0 would): every outgoing connection takes its local port from that
# range, so a port picked there may be taken by some connect() before the
# service binds it (seen in CI: orders exited on "address already in use" for
# its metrics port). Below it, only another pick can collide, and this process
# does not hand a port out twice.
_PICK_FROM = max(1024, _ephemeral_low() - 12_000)
_PICK_TO = max(_PICK_FROM + 1000, _ephemeral_low())
_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, below the ephemeral range,
    not handed out before by this process."""
    if len(_handed_out) > (_PICK_TO - _PICK_FROM) // 2:
        _handed_out.clear()  # a long session: the oldest ports are long bound or free
    for _ in range(1000):
        port = random.randrange(_PICK_FROM, _PICK_TO)
        if port not in _handed_out and not port_in_use(port):
            _handed_out.add(port)
            return port
    raise OSError(f"no free port between {_PICK_FROM} and {_PICK_TO - 1} on 127.0.0.1")


def mesh_security(service: LocalService) -> MeshSecurity | None:
    """How to reach `service`'s gRPC port: None for plaintext, else over mTLS
    as the service itself, whose certificates are made here when missing.

    Raises StartError when its mesh settings are wrong, as the service would.
    """
    if service.grpc_target is None or service.public:
        return None
    env = Env({**os.environ, **service.environment})
    try:
        if env.flag("MESH_MTLS", MTLS_DEFAULT):
            ensure(certs_dir_from_env(env))
        return MeshSecurity.from_env(env)
    except ConfigError as error:
        raise StartError(f"{service.name}: configuration error: {error}") from None


def is_ready(service: LocalService, security: MeshSecurity | None = None) -> bool:
    target = service.grpc_target
    if target is not None:
        return is_serving(target, timeout_s=1.0, security=security)
    try:
        with urllib.request.urlopen(service.ready, timeout=1.0) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Stack:
    """Processes of one local-mode run, all sharing `run_dir`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def pid_file(self, name: str) -> Path:
        return self.run_dir / "pids" / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def start(
        self,
        service: LocalService,
        timeout_s: float = 60.0,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """Starts `service` and returns once it is ready (its `ready` URL
        answers, or the `ready` check passes); raises StartError otherwise.
        A name runs once per stack: its PID file is what stops it, so a
        second process under the same name would be left running."""
        running = self._procs.get(service.name)
        if running is not None and running.poll() is None:
            raise ValueError(f"{service.name} is already running in {self.run_dir}")
        for dirname in ("pids", "logs", "data"):
            (self.run_dir / dirname).mkdir(parents=True, exist_ok=True)
        security = mesh_security(service)
        log_path = self.log_file(service.name)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                service.command,
                cwd=REPO_ROOT,
                env={**os.environ, **service.environment},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives `make up` and ignores its ^C
            )
        self._procs[service.name] = proc
        record = {"pid": proc.pid, "start": _start_ticks(proc.pid), "command": service.command}
        self.pid_file(service.name).write_text(json.dumps(record))
        deadline = time.monotonic() + timeout_s
        while not (ready() if ready is not None else is_ready(service, security)):
            if proc.poll() is not None:
                self.stop([service.name])
                raise StartError(
                    f"{service.name} exited with status {proc.returncode}; "
                    f"last lines of {log_path}:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop([service.name])
                raise StartError(f"{service.name} not ready after {timeout_s:.0f}s: {log_path}")
            time.sleep(0.1)

    def recorded(self) -> list[str]:
        """Names with a PID file, in the order they were started."""
        entries = []
        for path in (self.run_dir / "pids").glob("*.json"):
            try:
                started = int(json.loads(path.read_text()).get("start") or 0)
            except (OSError, ValueError):
                started = 0
            entries.append((started, path.stem))
        return [name for _, name in sorted(entries)]

    def pid(self, name: str) -> int | None:
        """The PID of a running recorded process, None if it is not running."""
        if not self.alive(name):
            return None
        return int(json.loads(self.pid_file(name).read_text())["pid"])

    def alive(self, name: str) -> bool:
        """Whether the recorded process still runs (a zombie does not)."""
        try:
            record = json.loads(self.pid_file(name).read_text())
        except (OSError, ValueError):
            return False
        return record.get("start") is not None and _start_ticks(record["pid"]) == record["start"]

    def stop(self, names: Iterable[str] | None = None, timeout_s: float = 15.0) -> list[str]:
        """Stops the named (default: all recorded) processes, last started first.

        SIGTERM lets a service drain; SIGKILL follows after `timeout_s`.
        """
        stopped = []
        if names is None:  # what is recorded, and children of ours whose record is gone
            recorded = self.recorded()
            names = [*recorded, *(n for n in self._procs if n not in recorded)]
        for name in reversed(list(names)):
            pid = self.pid(name)
            if pid is not None:
                self._signal_and_wait(name, pid, timeout_s)
                stopped.append(name)
            self.pid_file(name).unlink(missing_ok=True)
            proc = self._procs.pop(name, None)
            if proc is not None and proc.returncode is None:
                self._reap(proc, timeout_s)
        return stopped

    def _signal_and_wait(self, name: str, pid: int, timeout_s: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self._running(name, pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._running(name, pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self._running(name, pid):
                time.sleep(0.05)

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        """Waits for a child of ours that is dead or dying, so no zombie is left.

        /proc shows a multi-threaded process (Go, Node) as a zombie as soon as
        its main thread has exited, while its other threads still run: it
        cannot be reaped until they finish too, hence a wait, not a poll.
        """
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _running(self, name: str, pid: int) -> bool:
        proc = self._procs.get(name)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None  # we are the parent: reap it
        return _start_ticks(pid) is not None


def start_all(stack: Stack, services: Sequence[LocalService], timeout_s: float = 60.0) -> None:
    """Starts services in order; on any failure stops the ones already started."""
    try:
        for service in services:
            stack.start(service, timeout_s)
    except BaseException:
        stack.stop([s.name for s in services])
        raise
