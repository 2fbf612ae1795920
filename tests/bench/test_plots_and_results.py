"""bench.plots and bench.results_doc on synthetic figures: no service, no timing.

`make bench` draws the real plots; here each is drawn once into a temporary
folder to prove the code works with the shapes the parts hand it.
"""

from __future__ import annotations

from pathlib import Path

import bench.__main__
from bench.arrival import RateRun
from bench.load import Sample
from bench.plots import plot_arrival, plot_latency_cdf, plot_throughput
from bench.results_doc import PARTS, assemble

PNG = b"\x89PNG\r\n\x1a\n"


def test_latency_cdf(tmp_path: Path) -> None:
    samples = {
        (call, mode): Sample([0.001 * (i + 1) for i in range(50)], 0.1)
        for call in ("catalog GetProduct", "checkout PlaceOrder")
        for mode in ("tracing on, sampled", "tracing off")
    }
    path = plot_latency_cdf({1: samples, 32: samples}, tmp_path / "cdf.png")
    assert path.read_bytes().startswith(PNG)


def test_throughput(tmp_path: Path) -> None:
    by_target = {"echo": {1: 1500.0, 4: 3000.0, 32: 3400.0}, "catalog": {1: 1200.0, 32: 2400.0}}
    path = plot_throughput(by_target, tmp_path / "throughput.png")
    assert path.read_bytes().startswith(PNG)


def test_checkout_arrival_with_a_rate_that_confirmed_nothing(tmp_path: Path) -> None:
    runs = [
        RateRun(50.0, 250, [0.015] * 250, span_s=5.0),
        RateRun(100.0, 500, [], span_s=9.0),  # every order failed: no percentile
    ]
    path = plot_arrival(runs, tmp_path / "arrival.png")
    assert path.read_bytes().startswith(PNG)


def test_results_holds_every_part_with_its_plot(tmp_path: Path) -> None:
    (tmp_path / "anchors.md").write_text("# Benchmark: the anchors\n\n## Sweep\n\n| a |\n")
    (tmp_path / "throughput.png").write_bytes(PNG)
    (tmp_path / "calls.md").write_text("# Benchmark: calls\n\n| b |\n")  # its plot is missing
    text = assemble(tmp_path, "pytest")
    assert text.startswith("# shopmesh benchmarks: every table and plot\n")
    assert "Command: `pytest`" in text
    assert "## the anchors\n\n### Sweep\n\n| a |" in text
    assert "![throughput against calls in flight](throughput.png)" in text
    assert "latency-cdf.png" not in text
    assert "## calls\n\n| b |" in text
    for part, (name, _, _) in PARTS.items():
        if part not in ("anchors", "calls"):
            assert f"Not run yet: `python -m bench --only {part}` writes {name}." in text


def test_every_part_is_an_only_choice_and_in_the_docstring() -> None:
    assert tuple(PARTS) == bench.__main__.BENCHMARKS
    doc = bench.__main__.__doc__ or ""
    for part, (name, _, _) in PARTS.items():
        assert f"- `{part}` (bench/{name}" in doc
