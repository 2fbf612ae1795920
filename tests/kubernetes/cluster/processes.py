"""The cluster's programs as child processes: each started in a session of its
own with its log in the run's folder and its PID recorded there, stopped by
that PID (SIGTERM, then SIGKILL), also from a later run when this one was
killed before it could stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class StartFailed(RuntimeError):
    pass


class Processes:
    def __init__(self, state: Path) -> None:
        self.pids = state / "pids"
        self.logs = state / "logs"
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self._children[name] = child
        (self.pids / name).write_text(f"{child.pid} {Path(argv[0]).name}\n")

    def wait_until(
        self, name: str, ready: Callable[[], bool], timeout_s: float, every_s: float = 0.5
    ) -> float:
        """Seconds until `ready()`; StartFailed with the log's tail if the
        process exits first or the time runs out."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            child = self._children.get(name)
            if child is not None and child.poll() is not None:
                raise StartFailed(f"{name} exited ({child.returncode}):\n{self.tail(name)}")
            if ready():
                return time.monotonic() - started
            time.sleep(every_s)
        raise StartFailed(f"{name} not ready after {timeout_s:.0f} s:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> dict[str, int]:
        """The recorded processes still running (name -> PID)."""
        found = {}
        for record in self.pids.iterdir():
            pid, _, program = record.read_text().strip().partition(" ")
            if _is(int(pid), program):
                found[record.name] = int(pid)
        return found

    def stop(self, name: str, grace_s: float = 10) -> None:
        record = self.pids / name
        if not record.exists():
            return
        child = self._children.pop(name, None)
        if child is not None:
            _stop_child(child, grace_s)
        else:  # started by a run that was killed: known only by its record
            pid_text, _, program = record.read_text().strip().partition(" ")
            _stop_pid(int(pid_text), program, grace_s)
        record.unlink()


def _stop_child(child: subprocess.Popen[bytes], grace_s: float) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _stop_pid(pid: int, program: str, grace_s: float) -> None:
    if not _is(pid, program):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _is(pid, program) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is(pid, program):
        os.kill(pid, signal.SIGKILL)
        while _is(pid, program):
            time.sleep(0.05)


def _is(pid: int, program: str) -> bool:
    """Whether `pid` is still a live `program` (a PID can be reused)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    if "\nState:\tZ" in status:
        return False
    return Path(cmdline).name == program
