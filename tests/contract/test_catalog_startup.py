"""How the real catalog process fails at start: one clear line, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from localmode.topology import REPO_ROOT


def start_catalog(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "OTEL_SDK_DISABLED": "true",
        "CATALOG_DB_PATH": str(tmp_path / "catalog.db"),
        "GRPC_LISTEN_ADDR": "127.0.0.1:0",
    }
    return subprocess.run(
        [sys.executable, "-m", "catalog"],
        cwd=REPO_ROOT,
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GRPC_LISTEN_ADDR", "no-port-here"),
        ("SHUTDOWN_GRACE_SECONDS", "soon"),
        ("FAULT_ERROR_PERCENT", "150"),
        ("CATALOG_PAGE_TOKEN_KEY", "not-hex"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_malformed_config_stops_the_process_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = start_catalog(tmp_path, **{variable: value})
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_stops_the_process(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = start_catalog(tmp_path, GRPC_LISTEN_ADDR=f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
