"""The PNG plots of `make bench`, drawn with matplotlib's Agg canvas into bench/.

Each part that has something to plot draws it when it runs, into a file
whose name never changes (so results.md and the README can link it):
- latency-cdf.png (`calls`): each call's latency CDF, one line per call and
  tracing mode, one panel per calls in flight, log x-axis;
- throughput.png (`anchors`): calls per second against calls in flight for
  the anchors and catalog direct;
- checkout-arrival.png (`arrival`): checkout p50 and p99 against the
  arrival rate, and the rate achieved against the rate sent.
The figures are built with matplotlib's object API on an Agg canvas, never
through pyplot, so no global state or display is involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from matplotlib.typing import LineStyleType as LineStyle

from bench.arrival import RateRun
from bench.load import Sample
from localmode.topology import REPO_ROOT

__all__ = [
    "ARRIVAL_PNG",
    "CDF_PNG",
    "THROUGHPUT_PNG",
    "plot_arrival",
    "plot_latency_cdf",
    "plot_throughput",
]

CDF_PNG = REPO_ROOT / "bench" / "latency-cdf.png"
THROUGHPUT_PNG = REPO_ROOT / "bench" / "throughput.png"
ARRIVAL_PNG = REPO_ROOT / "bench" / "checkout-arrival.png"
DPI = 100
# One line style per tracing mode, in the order modes first appear.
# Tick labels as plain numbers (0.5, 2, 100), not powers of ten.
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
STYLES: tuple[LineStyle, ...] = ("-", "--", ":", "-.")


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    # No "Software" entry: the file changes only when the figures do.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def plot_latency_cdf(results: Mapping[int, Mapping[tuple[str, str], Sample]], path: Path) -> Path:
    """One panel per calls in flight; a line per (call, mode): colour by call, style by mode."""
    figure = Figure(figsize=(10.0, 4.0 * max(1, len(results))), layout="constrained")
    calls: list[str] = []
    modes: list[str] = []
    for by_key in results.values():
        for call, mode in by_key:
            calls += [] if call in calls else [call]
            modes += [] if mode in modes else [mode]
    for row, (concurrency, by_key) in enumerate(results.items(), start=1):
        axes: Axes = figure.add_subplot(len(results), 1, row)
        for (call, mode), sample in by_key.items():
            ordered = sorted(sample.latencies_s)
            if not ordered:
                continue
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            axes.plot(
                [v * 1000 for v in ordered],
                fractions,
                color=f"C{calls.index(call) % 10}",
                linestyle=STYLES[modes.index(mode) % len(STYLES)],
                linewidth=1.2,
                label=f"{call}, {mode}",
            )
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(PLAIN)  # 0.5, 1, 10 rather than 10^0
        axes.set_ylim(0, 1)
        axes.set_xlabel("latency per call, ms (log)")
        axes.set_ylabel("fraction of calls")
        axes.set_title(f"{concurrency} in flight")
        axes.grid(True, which="both", alpha=0.3)
    _legends(figure, calls, modes)
    return _save(figure, path)


def _legends(figure: Figure, calls: list[str], modes: list[str]) -> None:
    """Two legends right of the panels: colour means the call, line style the tracing
    mode (fifteen combined entries would hide the lines)."""
    by_call = [Line2D([], [], color=f"C{i % 10}") for i in range(len(calls))]
    by_mode = [
        Line2D([], [], color="black", linestyle=STYLES[i % len(STYLES)]) for i in range(len(modes))
    ]
    figure.legend(by_call, calls, fontsize=8, loc="outside right upper", title="call")
    figure.legend(by_mode, modes, fontsize=8, loc="outside right lower", title="mode")


def plot_throughput(by_target: Mapping[str, Mapping[int, float]], path: Path) -> Path:
    """Calls per second against calls in flight (log 2 x-axis), one line per target."""
    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    axes: Axes = figure.add_subplot(1, 1, 1)
    for index, (target, by_in_flight) in enumerate(by_target.items()):
        points = sorted(by_in_flight.items())
        axes.plot(
            [n for n, _ in points],
            [rate for _, rate in points],
            marker="o",
            color=f"C{index % 10}",
            label=target,
        )
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(PLAIN)
    axes.set_xticks(sorted({n for by_n in by_target.values() for n in by_n}))
    axes.set_xlabel("calls in flight (log 2)")
    axes.set_ylabel("calls per second")
    axes.set_ylim(bottom=0)
    axes.set_title("throughput against calls in flight, one client")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_arrival(runs: Sequence[RateRun], path: Path) -> Path:
    """Checkout p50 and p99 (log y) and the achieved rate, each against the rate sent."""
    figure = Figure(figsize=(10.0, 4.2), layout="constrained")
    latency: Axes = figure.add_subplot(1, 2, 1)
    achieved: Axes = figure.add_subplot(1, 2, 2)
    rates = [run.target_per_s for run in runs]
    for q, label, marker in ((0.5, "p50", "o"), (0.99, "p99", "s")):
        points = [(run.target_per_s, run.quantile_s(q)) for run in runs]
        kept = [(rate, value * 1000) for rate, value in points if value is not None]
        latency.plot([r for r, _ in kept], [v for _, v in kept], marker=marker, label=label)
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(PLAIN)
    latency.set_xlabel("arrival rate sent, orders/s")
    latency.set_ylabel("PlaceOrder latency from scheduled send, ms (log)")
    latency.set_title("checkout latency against arrival rate")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend()
    achieved.plot(rates, [run.achieved_per_s for run in runs], marker="o", label="achieved")
    top = max(rates, default=1.0)
    achieved.plot([0, top], [0, top], linestyle=":", color="grey", label="sent")
    achieved.set_xlabel("arrival rate sent, orders/s")
    achieved.set_ylabel("confirmed orders/s")
    achieved.set_title("throughput against arrival rate")
    achieved.grid(True, alpha=0.3)
    achieved.legend()
    return _save(figure, path)
