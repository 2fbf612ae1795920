"""The `arrival` part: checkout latency at fixed arrival rates (open loop), to find the knee.

The whole shop runs traced as `make up` runs it (`bench.shop`: Jaeger, NATS,
the six services; every checkout sampled). For each rate in turn, lowest
first, the client sends PlaceOrder through the gateway on a fixed schedule,
order i at t0 + i / rate, whether or not earlier orders have come back, for
`duration_s` or `max_orders`, whichever comes first, then waits for every
order. Each latency runs from the order's scheduled send time, not from when
the client got round to sending it: a client that waits for a slow reply
before sending the next (closed loop) hides the queueing a real arrival
would meet (coordinated omission). The sweep stops going up once a rate
saturates (`saturation`): the shop then falls behind, and a higher rate only
lengthens the queue; one more rate halfway below it then places the knee
more closely. Before each rate, `bench.stock` reads what inventory
holds, so that no order finds its product sold out.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from bench.load import Call, get_product
from bench.report import percentile
from bench.shop import NotConfirmed, Shop, place_order
from bench.stock import StockPool

__all__ = [
    "MAX_ORDERS",
    "MIN_ACHIEVED",
    "P99_BOUND_S",
    "RATES",
    "ArrivalResult",
    "RateRun",
    "measure_arrival",
    "open_loop",
    "saturation",
    "sweep",
]

RATES = (50.0, 100.0, 200.0, 400.0)
DURATION_S = 5.0
MAX_ORDERS = 1000
# Saturated: the shop completed under 90% of the orders per second it was
# sent, or its p99 passed half a second (about 25 times an unloaded checkout:
# orders are queueing, even if the shop still completes them at the rate
# sent), or more than 1% of the orders failed.
MIN_ACHIEVED = 0.9
P99_BOUND_S = 0.5
MAX_FAILED = 0.01
REFINE = 1  # rates bisecting the knee once a listed rate saturates
UNLOADED_ORDERS = 50  # one at a time, before the rates: the unloaded checkout
ANCHOR_CALLS = 200  # catalog GetProduct direct, one at a time
WARM_UP_ORDERS = 20  # not kept: connections, caches and the first spans' exporters
PAUSE_S = 1.0  # between rates, so that the outbox and notifications catch up


@dataclass
class RateRun:
    target_per_s: float
    sent: int
    latencies_s: list[float]  # confirmed orders, each from its scheduled send time
    errors: Counter[str] = field(default_factory=Counter)  # status code or outcome -> count
    span_s: float = 0.0  # from the first scheduled send to the last reply
    send_lag_s: list[float] = field(default_factory=list)  # actual send - scheduled

    @property
    def confirmed(self) -> int:
        return len(self.latencies_s)

    @property
    def achieved_per_s(self) -> float:
        return self.confirmed / self.span_s if self.span_s > 0 else 0.0

    def quantile_s(self, q: float) -> float | None:
        return percentile(self.latencies_s, q) if self.latencies_s else None


@dataclass
class ArrivalResult:
    runs: list[RateRun]
    not_run: list[float]  # rates above the knee, not sent
    stopped: str  # why the sweep stopped going up; "" if every rate ran unsaturated
    unloaded_s: list[float]  # PlaceOrder one at a time via the gateway
    anchor_s: list[float]  # catalog GetProduct direct, one at a time
    duration_s: float  # how long each rate sends, at most
    max_orders: int  # and how many orders, at most


def saturation(run: RateRun, p99_bound_s: float = P99_BOUND_S) -> str:
    """Why `run` shows the shop saturated, or "" if it kept up."""
    reasons = []
    if run.achieved_per_s < MIN_ACHIEVED * run.target_per_s:
        reasons.append(
            f"achieved {run.achieved_per_s:,.0f}/s, under {MIN_ACHIEVED:.0%} of"
            f" {run.target_per_s:,.0f}/s"
        )
    p99 = run.quantile_s(0.99)
    if p99 is not None and p99 > p99_bound_s:
        reasons.append(f"p99 {p99 * 1000:,.0f} ms over {p99_bound_s * 1000:,.0f} ms")
    failed = sum(run.errors.values())
    if run.sent and failed > MAX_FAILED * run.sent:
        reasons.append(f"{failed} of {run.sent} orders failed")
    return "; ".join(reasons)


async def sweep(
    rates: Sequence[float],
    run_rate: Callable[[float], Awaitable[RateRun | str]],
    p99_bound_s: float = P99_BOUND_S,
    refine: int = REFINE,
) -> tuple[list[RateRun], list[float], str]:
    """Runs `rates` lowest first until one saturates: (runs, rates not run, why stopped).

    Then up to `refine` rates halfway between the highest that kept up and
    the lowest that did not, each halving the gap, so that the knee shows
    between two rates closer than the list's. `run_rate` returns a string
    instead of a run when the rate cannot be run (too little stock left,
    say): the sweep stops there too, saying why. Runs come back by rate.
    """
    runs: list[RateRun] = []
    ordered = sorted(rates)
    for index, rate in enumerate(ordered):
        run = await run_rate(rate)
        if isinstance(run, str):
            return runs, ordered[index:], f"{rate:,.0f}/s not run: {run}"
        runs.append(run)
        why = saturation(run, p99_bound_s)
        if why:
            runs, good, bad = await _refine(runs, run_rate, p99_bound_s, refine)
            between = f"; the knee lies between {good:,.0f}/s and {bad:,.0f}/s" if good else ""
            return runs, ordered[index + 1 :], f"saturated at {rate:,.0f}/s: {why}{between}"
    return runs, [], ""


async def _refine(
    runs: list[RateRun],
    run_rate: Callable[[float], Awaitable[RateRun | str]],
    p99_bound_s: float,
    steps: int,
) -> tuple[list[RateRun], float, float]:
    """`runs` (the last one saturated) and up to `steps` rates bisecting below it,
    by rate; then the highest rate that kept up (0 if none) and the lowest that did not."""
    bad = runs[-1].target_per_s
    good = max((r.target_per_s for r in runs[:-1]), default=0.0)
    for _ in range(steps if good else 0):
        rate = float(round((good + bad) / 2))
        if rate in (good, bad):
            break
        run = await run_rate(rate)
        if isinstance(run, str):
            break
        runs.append(run)
        if saturation(run, p99_bound_s):
            bad = rate
        else:
            good = rate
    return sorted(runs, key=lambda r: r.target_per_s), good, bad


def planned_orders(rate: float, duration_s: float, max_orders: int) -> int:
    return max(1, min(max_orders, round(rate * duration_s)))


async def open_loop(
    send: Call, rate: float, duration_s: float = DURATION_S, max_orders: int = MAX_ORDERS
) -> RateRun:
    """`send` at `rate` per second on a fixed schedule; every latency from its scheduled time."""
    count = planned_orders(rate, duration_s, max_orders)
    run = RateRun(rate, count, [])
    finished: list[float] = []

    async def one(scheduled: float) -> None:
        run.send_lag_s.append(time.perf_counter() - scheduled)
        try:
            await send()
        except grpc.aio.AioRpcError as error:
            run.errors[error.code().name] += 1
        except NotConfirmed:
            run.errors["order CANCELLED"] += 1
        else:
            run.latencies_s.append(time.perf_counter() - scheduled)
        finished.append(time.perf_counter())

    tasks = []
    start = time.perf_counter() + 0.01
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    run.span_s = max(finished) - start
    return run


async def _sequential(call: Call, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - began)
    return latencies


async def measure_arrival(
    shop: Shop,
    rates: Sequence[float] = RATES,
    duration_s: float = DURATION_S,
    max_orders: int = MAX_ORDERS,
    unloaded_orders: int = UNLOADED_ORDERS,
) -> ArrivalResult:
    """The anchor and the unloaded checkout, then the rates until the knee."""
    async with (
        grpc.aio.insecure_channel(shop.gateway) as gateway,
        grpc.aio.insecure_channel(shop.catalog) as catalog,
    ):
        product = await get_product(catalog)
        await product()  # connect outside the clock
        anchor = await _sequential(product, ANCHOR_CALLS)
        pool = await asyncio.to_thread(StockPool.from_inventory, shop.inventory)
        order = place_order(gateway, shop, pool)
        await _sequential(order, WARM_UP_ORDERS)
        unloaded = await _sequential(order, unloaded_orders)

        async def run_rate(rate: float) -> RateRun | str:
            await asyncio.sleep(PAUSE_S)
            stock = await asyncio.to_thread(StockPool.from_inventory, shop.inventory)
            wanted = planned_orders(rate, duration_s, max_orders)
            if stock.remaining < wanted:
                return f"inventory holds {stock.remaining} units, the rate needs {wanted}"
            return await open_loop(place_order(gateway, shop, stock), rate, duration_s, max_orders)

        runs, not_run, stopped = await sweep(rates, run_rate)
    return ArrivalResult(runs, not_run, stopped, unloaded, anchor, duration_s, max_orders)
