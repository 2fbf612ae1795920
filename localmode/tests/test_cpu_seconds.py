"""localmode.processes.cpu_seconds: a process's CPU time from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from localmode.processes import cpu_seconds


def test_it_grows_with_the_work_of_every_thread() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # a fifth of a second of CPU
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.15


def test_a_process_that_is_gone_raises() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    with pytest.raises(ProcessLookupError):
        cpu_seconds(int(child.stdout))
