"""Traffic files for tests: mesh/traffic.yaml with some defaults replaced.

A test stack reads one through MESH_TRAFFIC_FILE, so that it can turn a
feature off for a control run, or make a breaker trip sooner.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mesh.traffic_file import DEFAULT_TRAFFIC_FILE

# A breaker that never opens: no run of failures is this long, and an error
# ratio of 1 turns the ratio rule off.
NO_BREAKER = {"consecutive_failures": 1_000_000, "error_ratio": 1}


def traffic_file(
    path: Path,
    *,
    breaker: Mapping[str, Any] | None = None,
    retries: bool = True,
) -> Path:
    """Writes the default policy to `path` with the defaults' `breaker`
    settings updated; `retries=False` makes every upstream retry nothing."""
    policy = yaml.safe_load(DEFAULT_TRAFFIC_FILE.read_text())
    policy["defaults"]["breaker"].update(breaker or {})
    if not retries:
        for upstream in policy["upstreams"].values():
            upstream.pop("retry", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path
