"""What every results file of `make bench` starts with, and the percentile both tables use."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime


def header(title: str, command: str) -> list[str]:
    return [
        f"# Benchmark: {title}",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", {platform.system()} {platform.release()}  ",
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
