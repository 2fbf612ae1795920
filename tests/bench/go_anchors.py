"""Builds the Go anchors of the benchmarks (bench/echo-go) for the smoke tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from localmode.topology import REPO_ROOT


def build_go_anchor(tmp_path_factory: pytest.TempPathFactory, package: str, name: str) -> Path:
    """`package` of bench/echo-go (`.`, `./proxy`) built as `name` in a temporary folder."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"go is not on PATH: {name} cannot be built")
    binary = tmp_path_factory.mktemp(name) / name
    subprocess.run(
        [go, "build", "-o", str(binary), package],
        cwd=REPO_ROOT / "bench" / "echo-go",
        check=True,
        timeout=300,
    )
    return binary
