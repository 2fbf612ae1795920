"""Smoke test of `python -m bench --only calls`: every call in every mode, a few calls each.

No timing is asserted: only that the direct services and both shops (traced
and untraced, behind their gateways) start, answer every call, confirm every
checkout, and land in the table and the plot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.calls import (
    ANCHOR,
    CHECKOUT,
    MODES,
    VIA_GATEWAY,
    CallTargets,
    measure,
    render,
    start_services,
)
from bench.load import Sample
from bench.plots import plot_latency_cdf

CALLS, CHECKOUTS, ROUNDS, IN_FLIGHT = 30, 4, 1, 4

Key = tuple[str, str]


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallTargets]:
    stack, started = start_services(tmp_path_factory.mktemp("calls"))
    try:
        yield started
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def results(targets: CallTargets) -> dict[Key, Sample]:
    return asyncio.run(measure(targets, CALLS, ROUNDS, IN_FLIGHT, CHECKOUTS))


def test_every_call_and_mode_answers(results: dict[Key, Sample]) -> None:
    calls = {label for label, _ in results}
    assert {ANCHOR, VIA_GATEWAY, CHECKOUT} <= calls
    assert len(calls) == 5
    assert set(results) == {(call, mode) for call in calls for mode in MODES}
    for (label, mode), sample in results.items():
        expected = CHECKOUTS if label == CHECKOUT else CALLS
        assert len(sample.latencies_s) == expected * ROUNDS, (label, mode)


def test_the_table_and_the_plot(results: dict[Key, Sample], tmp_path: Path) -> None:
    table = render({IN_FLIGHT: results}, "pytest")
    for mode in MODES:
        assert f"| {IN_FLIGHT} | {VIA_GATEWAY} | {mode} | {CALLS * ROUNDS} |" in table
        assert f"| {IN_FLIGHT} | {CHECKOUT} | {mode} | {CHECKOUTS * ROUNDS} |" in table
    assert plot_latency_cdf({IN_FLIGHT: results}, tmp_path / "cdf.png").stat().st_size > 0
