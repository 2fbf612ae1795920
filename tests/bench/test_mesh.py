"""Smoke test of `python -m bench --only mesh`: each hop's catalog starts, answers
a few dozen calls, and lands in the table, beside the echo anchors and the
target's verdict; the breaker part runs too.

No timing is asserted (the machine is noisy). Afterwards no catalog the run
started is left running: every hop's process has a name of its own in the
stack, which is what stops it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.anchors import BARE as ECHO
from bench.anchors import SIDECARS
from bench.mesh import HOPS, MESH, MESH_UNSAMPLED
from bench.nginx import NGINX
from localmode.topology import REPO_ROOT


def _catalogs() -> set[str]:
    found = subprocess.run(
        ["pgrep", "-f", "python -m catalog"], capture_output=True, text=True, check=False
    )
    return set(found.stdout.split())


def test_the_mesh_part_measures_every_hop_and_leaves_nothing_running(tmp_path: Path) -> None:
    before = _catalogs()
    command = [
        sys.executable, "-m", "bench", "--only", "mesh", "--calls", "40", "--rounds", "1",
        "--concurrency", "1", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]

    table = (tmp_path / "mesh.md").read_text()
    for hop in (*HOPS, MESH_UNSAMPLED, ECHO, *([SIDECARS] if NGINX.is_file() else [])):
        assert f"| 1 | {hop} | 40 |" in table
    verdict = table.split("Target: the whole mesh adds at most 150 µs median")[1]
    for row in ("bare catalog", MESH_UNSAMPLED, f"{MESH} (sampled)"):
        assert f"| {row} | " in verdict
    assert "| refused by the open breaker | 2000 |" in table
    assert _catalogs() - before == set()
