"""The open-loop checkout (`python -m bench --only arrival`): its logic, then a smoke run.

The saturation rule, the sweep's stop and the open loop's clock are tested
on synthetic runs and a fake send, without a network. The smoke test runs
the real shop and sends a handful of orders at two low rates: no timing is
asserted, only that every order is confirmed and lands in the table.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import grpc
import pytest

from bench.arrival import (
    MAX_FAILED,
    P99_BOUND_S,
    ArrivalResult,
    RateRun,
    measure_arrival,
    open_loop,
    planned_orders,
    saturation,
    sweep,
)
from bench.arrival_report import render_arrival
from bench.shop import NotConfirmed, Shop, start_shop
from localmode.processes import Stack


def kept_up(rate: float, sent: int = 100) -> RateRun:
    """A run that confirmed every order at the rate sent, each in 20 ms."""
    return RateRun(rate, sent, [0.02] * sent, span_s=sent / rate)


def test_a_run_that_keeps_up_is_not_saturated() -> None:
    assert saturation(kept_up(100.0)) == ""


def test_a_run_under_nine_tenths_of_its_rate_is_saturated() -> None:
    run = kept_up(100.0)
    run.span_s = run.sent / 85.0  # 85 per second achieved
    assert saturation(run) == "achieved 85/s, under 90% of 100/s"


def test_a_p99_over_the_bound_is_saturation() -> None:
    run = kept_up(100.0)
    run.latencies_s[-2:] = [P99_BOUND_S * 2, P99_BOUND_S * 2]
    bound = P99_BOUND_S * 1000
    assert saturation(run) == f"p99 {bound * 2:,.0f} ms over {bound:,.0f} ms"


def test_failed_orders_past_the_share_are_saturation() -> None:
    allowed = int(MAX_FAILED * 100)
    run = kept_up(100.0)
    run.errors = Counter({"UNAVAILABLE": allowed})
    assert saturation(run) == ""
    run.errors["DEADLINE_EXCEEDED"] += 1
    assert saturation(run) == f"{allowed + 1} of 100 orders failed"


def test_a_run_with_nothing_confirmed_is_saturated() -> None:
    run = RateRun(100.0, 10, [], Counter({"UNAVAILABLE": 10}), span_s=1.0)
    assert saturation(run).startswith("achieved 0/s")


def tops_out_at(capacity: float, ran: list[float]) -> Callable[[float], Awaitable[RateRun]]:
    """A fake rate runner for a shop that completes at most `capacity` orders per second."""

    async def run_rate(rate: float) -> RateRun:
        ran.append(rate)
        run = kept_up(rate)
        run.span_s = run.sent / min(rate, capacity)
        return run

    return run_rate


async def test_the_sweep_goes_up_until_a_rate_saturates() -> None:
    ran: list[float] = []
    runs, not_run, stopped = await sweep(
        [400.0, 50.0, 200.0, 100.0], tops_out_at(150, ran), refine=0
    )
    assert ran == [50.0, 100.0, 200.0]  # lowest first, none past the knee
    assert [run.target_per_s for run in runs] == ran
    assert not_run == [400.0]
    assert stopped == (
        "saturated at 200/s: achieved 150/s, under 90% of 200/s;"
        " the knee lies between 100/s and 200/s"
    )


async def test_the_sweep_then_bisects_the_knee() -> None:
    ran: list[float] = []
    runs, not_run, stopped = await sweep(
        [50.0, 100.0, 200.0, 400.0], tops_out_at(120, ran), refine=2
    )
    # 150 saturates too (120 of 150 is 80%), then 125 keeps up (120 of 125 is 96%).
    assert ran == [50.0, 100.0, 200.0, 150.0, 125.0]
    assert [run.target_per_s for run in runs] == [50.0, 100.0, 125.0, 150.0, 200.0]
    assert not_run == [400.0]
    assert stopped.endswith("; the knee lies between 125/s and 150/s")


async def test_no_bisection_when_the_first_rate_saturates() -> None:
    ran: list[float] = []
    runs, not_run, stopped = await sweep([50.0, 100.0], tops_out_at(10, ran), refine=3)
    assert ran == [run.target_per_s for run in runs] == [50.0]
    assert not_run == [100.0]
    assert stopped == "saturated at 50/s: achieved 10/s, under 90% of 50/s"


async def test_the_sweep_runs_every_rate_when_none_saturates() -> None:
    async def run_rate(rate: float) -> RateRun:
        return kept_up(rate)

    runs, not_run, stopped = await sweep([50.0, 100.0], run_rate)
    assert [run.target_per_s for run in runs] == [50.0, 100.0]
    assert (not_run, stopped) == ([], "")


async def test_a_rate_that_cannot_run_stops_the_sweep_saying_why() -> None:
    async def run_rate(rate: float) -> RateRun | str:
        return kept_up(rate) if rate < 100 else "inventory holds 12 units, the rate needs 500"

    runs, not_run, stopped = await sweep([50.0, 100.0, 200.0], run_rate)
    assert len(runs) == 1
    assert not_run == [100.0, 200.0]
    assert stopped == "100/s not run: inventory holds 12 units, the rate needs 500"


def test_a_rate_sends_for_its_duration_or_its_cap() -> None:
    assert planned_orders(50.0, 5.0, 1000) == 250
    assert planned_orders(400.0, 5.0, 1000) == 1000
    assert planned_orders(0.1, 1.0, 1000) == 1


async def test_latency_counts_from_the_scheduled_send_time() -> None:
    """A server that takes one order at a time, 20 ms each, sent 200 per second:
    the orders queue, and the latencies show it. A closed loop would have sent
    the next only after the last answered and timed each at about 20 ms."""
    one_at_a_time = asyncio.Lock()

    async def send() -> None:
        async with one_at_a_time:
            await asyncio.sleep(0.02)

    run = await open_loop(send, rate=200.0, duration_s=0.05, max_orders=10)
    assert run.sent == run.confirmed == 10
    # The 10th is scheduled 45 ms in, and cannot finish before 10 x 20 ms.
    assert max(run.latencies_s) >= 0.2 - 0.045
    assert len(run.send_lag_s) == 10
    assert run.span_s >= 0.2


async def test_failed_and_cancelled_orders_are_counted_by_code() -> None:
    outcomes = iter(["ok", "unavailable", "cancelled", "ok"])

    async def send() -> None:
        outcome = next(outcomes)
        if outcome == "unavailable":
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", None
            )
        if outcome == "cancelled":
            raise NotConfirmed("order-1: out of stock")

    run = await open_loop(send, rate=1000.0, duration_s=1.0, max_orders=4)
    assert run.confirmed == 2
    assert run.errors == Counter({"UNAVAILABLE": 1, "order CANCELLED": 1})


def test_the_table_says_which_rates_were_not_run_and_why() -> None:
    saturated = kept_up(200.0)
    saturated.span_s = saturated.sent / 150.0
    saturated.errors = Counter({"DEADLINE_EXCEEDED": 3})
    result = ArrivalResult(
        runs=[kept_up(100.0), saturated],
        not_run=[400.0],
        stopped="saturated at 200/s: achieved 150/s, under 90% of 200/s",
        unloaded_s=[0.015] * 10,
        anchor_s=[0.001] * 10,
        duration_s=5.0,
        max_orders=1000,
    )
    table = render_arrival(result, "pytest")
    assert "| 100 | 100.0 | 100 | 100 | none | 20.0 | 20.0 | 20.0 | 20.0 | 1.33 |" in table
    assert "| 200 | 150.0 | 100 | 100 | DEADLINE_EXCEEDED 3 |" in table
    assert "| 400 | not run |" in table
    assert table.endswith("Knee: saturated at 200/s: achieved 150/s, under 90% of 200/s.\n")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    run_dir = tmp_path_factory.mktemp("arrival")
    stack = Stack(run_dir)
    try:
        yield start_shop(stack, run_dir)
    finally:
        stack.stop()


def test_a_few_orders_at_two_rates_through_the_real_shop(shop: Shop) -> None:
    result = asyncio.run(
        measure_arrival(shop, [10.0, 5.0], duration_s=0.6, max_orders=6, unloaded_orders=3)
    )
    # A loaded machine may call 5 per second the knee already: no timing is asserted.
    ran = [run.target_per_s for run in result.runs]
    assert ran + result.not_run == [5.0, 10.0]
    assert result.not_run == [] or result.stopped.startswith("saturated at 5/s")
    for run in result.runs:
        assert run.sent == planned_orders(run.target_per_s, 0.6, 6)
        assert run.confirmed == run.sent, run.errors
    assert len(result.unloaded_s) == 3
    table = render_arrival(result, "pytest")
    assert f"| 5 | {result.runs[0].achieved_per_s:,.1f} | 3 | 3 | none |" in table
