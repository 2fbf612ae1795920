"""Prints what the compose test measured (build and start-up times, image
sizes, the running stack's memory) at the end of the run, so CI logs carry it."""

from __future__ import annotations

from typing import Any

import pytest

Measurements = list[tuple[str, str]]  # (label, value), in order
MEASUREMENTS = pytest.StashKey[Measurements]()


@pytest.fixture(scope="session")
def measurements(request: pytest.FixtureRequest) -> Measurements:
    return request.config.stash.setdefault(MEASUREMENTS, [])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(MEASUREMENTS, [])
    if not lines:
        return
    terminalreporter.section("compose stack measurements")
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        terminalreporter.write_line(f"{label:<{width}}  {value}")
