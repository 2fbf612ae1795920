"""``python -m tracing`` failures that need no running Jaeger."""

from __future__ import annotations

import subprocess
import sys

from localmode.processes import free_port
from tracing.tests.jaeger_process import REPO


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracing", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_an_unreachable_jaeger_is_one_line_on_stderr_and_exit_1() -> None:
    port = free_port()  # nothing listens there

    result = _cli("0" * 31 + "1", "--jaeger-url", f"http://127.0.0.1:{port}")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: cannot reach Jaeger at http://127.0.0.1:{port}: ")
    assert result.stderr.count("\n") == 1


def test_a_malformed_trace_id_is_a_usage_error() -> None:
    result = _cli("not-a-trace-id", "--jaeger-url", "http://127.0.0.1:9")

    assert result.returncode == 2
    assert "not a trace id" in result.stderr
    assert "Traceback" not in result.stderr
