"""The contracts themselves: buf lint, breaking-change detection, generated code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from localmode.topology import REPO_ROOT

BUF = REPO_ROOT / ".venv" / "bin" / "buf"
BASELINE = REPO_ROOT / "protos" / "baseline.json"


def run(*args: str | Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_buf_lint_passes() -> None:
    result = run(BUF, "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_baseline() -> None:
    result = run(BUF, "breaking", "--against", BASELINE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_change_is_detected(tmp_path: Path) -> None:
    """The check above can fail: removing a field from a copy must be flagged."""
    shutil.copy(REPO_ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    proto = tmp_path / "protos" / "shop" / "catalog" / "v1" / "catalog.proto"
    text = proto.read_text()
    assert "  string category = 4;\n" in text
    proto.write_text(text.replace("  string category = 4;\n", ""))
    result = run(BUF, "breaking", "--against", BASELINE, cwd=tmp_path)
    assert result.returncode != 0
    assert "category" in result.stdout + result.stderr


def test_generated_code_matches_protos() -> None:
    result = run(REPO_ROOT / "scripts" / "check-generated.sh")
    assert result.returncode == 0, result.stderr[-3000:]
