"""Smoke test of `python -m bench --only tracing`: the three catalogs start,
answer a few dozen calls in every row at 1 and 32 in flight, and the table
judges the targets at 32. No timing is asserted (the machine is noisy).

The not-exported row must really export nothing while the exported one does:
that is what splits the cost, so it is checked on Jaeger's side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from bench.tracing_cost import (
    EXPORTED,
    NOT_EXPORTED_NAME,
    OFF,
    ROWS,
    UNSAMPLED,
    TracingRun,
    TracingTargets,
    _split,
    measure_tracing,
    render_tracing,
    start_tracing,
)
from tracing.jaeger import find_traces
from tracing.model import Trace

CALLS = 40


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracingTargets]:
    stack, started = start_tracing(tmp_path_factory.mktemp("tracing"))
    try:
        yield started
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def results(catalogs: TracingTargets) -> dict[int, TracingRun]:
    return {c: asyncio.run(measure_tracing(catalogs, CALLS, 1, c)) for c in (1, 32)}


def test_every_row_answers_every_call_and_the_targets_are_judged(
    results: dict[int, TracingRun],
) -> None:
    table = render_tracing(results, "pytest")
    for concurrency, run in results.items():
        assert list(run.samples) == list(ROWS)
        assert list(run.cpu_us) == list(ROWS)
        for row in ROWS:
            assert len(run.samples[row].latencies_s) == CALLS, row
            assert run.cpu_us[row] >= 0, row
            assert f"| {concurrency} | {row} | {CALLS} |" in table
    judged = table.split("At 32 in flight:")[1]
    assert f"| {UNSAMPLED} |" in judged
    assert "| ≤ 5% |" in judged
    assert f"| {EXPORTED} |" in judged
    assert "| ≤ 20% |" in judged
    assert "a sampled call adds" in judged or "do not split the cost" in judged


def test_without_32_in_flight_nothing_is_judged(results: dict[int, TracingRun]) -> None:
    table = render_tracing({1: results[1]}, "pytest")
    assert table.rstrip().endswith("Not judged: no run at 32 in flight.")
    assert f"| 1 | {OFF} |" in table


def test_the_split_says_when_noise_hides_it() -> None:
    assert _split(300, 360, 390) == (
        "Of the 90 µs of CPU a sampled call adds (30% of the 300 µs a call takes with tracing"
        " off), making its span (the SDK's start, attributes and end) takes 60 µs and"
        " exporting it (the batch processor's thread encoding OTLP and sending it) 30 µs."
    )
    assert "do not split the cost" in _split(300, 400, 390)


def test_only_the_exported_copy_sends_spans(
    catalogs: TracingTargets, results: dict[int, TracingRun]
) -> None:
    since, until = time.time_ns() - 600 * 10**9, time.time_ns()
    deadline = time.monotonic() + 30  # the batch processor exports within 5 s
    exported: list[Trace] = []
    while not exported and time.monotonic() < deadline:
        exported = find_traces(
            "catalog", start_min_ns=since, start_max_ns=until, base_url=catalogs.jaeger
        )
        time.sleep(0.5)
    assert exported, "the exported copy's spans never reached Jaeger"
    never = find_traces(
        NOT_EXPORTED_NAME, start_min_ns=since, start_max_ns=until, base_url=catalogs.jaeger
    )
    assert never == []
