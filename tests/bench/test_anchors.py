"""Smoke test of `python -m bench --only anchors`: a few hundred calls through each anchor,
and a few dozen at each of two points of the throughput sweep.

No timing is asserted (the machine is noisy): only that every anchor starts,
answers each call, and lands in the table. grpc-go's echo is built here into
a temporary folder. nginx (`make bench-tools`) and ghz (`make tools`) are
optional: without them their rows must say why, and the tests that need
them are skipped saying so.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench.anchors import (
    BARE,
    CATALOG,
    GHZ,
    GO,
    PAYLOAD,
    SIDECARS,
    AnchorRun,
    Anchors,
    AnchorStack,
    _process,
    measure_anchors,
    render_anchors,
    start_anchors,
)
from bench.echo_server import ECHO_METHOD, Echo
from bench.nginx import NGINX
from bench.plots import plot_throughput
from bench.sweep import measure_sweep, render_sweep, throughputs
from localmode.processes import StartError
from tests.bench.go_anchors import build_go_anchor

CALLS, ROUNDS, IN_FLIGHT = 100, 2, 4  # 200 timed calls per target, plus the warm-up's


@pytest.fixture(scope="module")
def echo_go(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_anchor(tmp_path_factory, ".", "echo-go")


@pytest.fixture(scope="module")
def anchors(tmp_path_factory: pytest.TempPathFactory, echo_go: Path) -> Iterator[Anchors]:
    stack, started = start_anchors(tmp_path_factory.mktemp("anchors"), NGINX, echo_go)
    try:
        yield started
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def run(anchors: Anchors) -> AnchorRun:
    return asyncio.run(measure_anchors(anchors, CALLS, ROUNDS, IN_FLIGHT))


def test_every_anchor_answers_every_call(anchors: Anchors, run: AnchorRun) -> None:
    expected = [BARE, GO, *([SIDECARS] if NGINX.is_file() else []), CATALOG]
    assert list(run.samples) == expected
    for label, sample in run.samples.items():
        assert len(sample.latencies_s) == CALLS * ROUNDS, label
        assert sample.elapsed_s > 0
    table = render_anchors({IN_FLIGHT: run}, anchors, "pytest")
    for label in expected:
        assert f"| {IN_FLIGHT} | {label} | {CALLS * ROUNDS} |" in table


def test_sidecar_pair_or_why_not(anchors: Anchors, run: AnchorRun) -> None:
    table = render_anchors({IN_FLIGHT: run}, anchors, "pytest")
    if not NGINX.is_file():
        assert anchors.missing[SIDECARS].endswith("`make bench-tools` unpacks it)")
        assert f"'{SIDECARS}' is not measured: {NGINX} is missing" in table
        pytest.skip(f"nginx rows not measured: {NGINX} is missing (make bench-tools)")
    assert SIDECARS not in anchors.missing
    assert anchors.nginx.startswith("nginx/")


def test_ghz_cross_check_or_why_not(anchors: Anchors, run: AnchorRun) -> None:
    table = render_anchors({IN_FLIGHT: run}, anchors, "pytest")
    if not GHZ.is_file():
        assert isinstance(run.ghz, str)
        assert f"{GHZ} is missing" in run.ghz
        assert f"ghz at {IN_FLIGHT} in flight is not measured: {GHZ} is missing" in table
        pytest.skip(f"ghz rows not measured: {GHZ} is missing (make tools)")
    assert not isinstance(run.ghz, str), run.ghz
    assert len(run.ghz.latencies_s) == CALLS * ROUNDS


def test_ghz_missing_is_said(anchors: Anchors, tmp_path: Path) -> None:
    missing = tmp_path / "ghz"
    run = asyncio.run(measure_anchors(anchors, 10, 1, 1, ghz=missing))
    assert run.ghz == f"{missing} is missing (`make tools` installs it)"


def test_missing_binaries_leave_rows_out_saying_why(tmp_path: Path) -> None:
    stack, started = start_anchors(tmp_path, tmp_path / "nginx", tmp_path / "echo-go")
    stack.stop()
    assert [*started.targets] == [BARE, CATALOG]
    assert started.missing[GO].startswith(f"{tmp_path / 'echo-go'} is missing")
    assert started.missing[SIDECARS].startswith(f"{tmp_path / 'nginx'} is missing")


def test_a_process_that_exits_fails_its_start(tmp_path: Path) -> None:
    stack = AnchorStack(tmp_path)
    # _process appends --listen, which `python -c` ignores.
    dies = _process("dies", (sys.executable, "-c", "raise SystemExit(3)"), tmp_path)
    with pytest.raises(StartError, match="dies exited with status 3"):
        stack.start_echo(dies, timeout_s=10)
    assert stack.stop() == []


async def test_python_echo_serves_echo_and_nothing_else() -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary(ECHO_METHOD, None, None)(PAYLOAD) == PAYLOAD
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await channel.unary_unary("/bench.v1.Echo/Other", None, None)(PAYLOAD)
    finally:
        await server.stop(None)
    assert other.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_go_echo_serves_echo_and_nothing_else(anchors: Anchors) -> None:
    target = anchors.targets[GO][1]
    with grpc.insecure_channel(target) as channel:
        assert channel.unary_unary(ECHO_METHOD, None, None)(PAYLOAD, timeout=5) == PAYLOAD
        with pytest.raises(grpc.RpcError) as other:
            channel.unary_unary("/bench.v1.Echo/Other", None, None)(PAYLOAD, timeout=5)
    error = other.value
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    assert ECHO_METHOD in error.details()


def test_throughput_sweep_over_calls_in_flight(anchors: Anchors, tmp_path: Path) -> None:
    swept = asyncio.run(measure_sweep(anchors, (1, 2), calls=20, rounds=1))
    assert list(swept) == [1, 2]
    rates = throughputs(swept)
    assert set(rates) == set(anchors.targets)
    assert all(set(by_n) == {1, 2} for by_n in rates.values())
    section = "\n".join(render_sweep(swept, 20, 1))
    assert f"| 1 | {BARE} | {rates[BARE][1]:,.0f} | 1.00 |" in section
    assert plot_throughput(rates, tmp_path / "throughput.png").stat().st_size > 0
