"""Bounded load on the whole mesh while orders is SIGKILLed and restarted twice.

200 PlaceOrder calls from 20 concurrent clients, each order with its own
idempotency key: most can be served, some cards are declined, and some
orders ask for the last units of scarce products (2 espresso machines, 10
teapots) and so run out of stock. Twice during the run orders is killed
with SIGKILL and started again; a client whose call fails with UNAVAILABLE
(or times out) retries the same request with the same key after a short
backoff, within a bounded time.

Afterwards, for every order in the orders database (not only those whose
PlaceOrder answered): it is CONFIRMED or CANCELLED; a CONFIRMED order has a
CHARGED payment for its total, a CANCELLED one no money held; it has exactly
one notification; and inventory moved exactly the units of the CONFIRMED
orders, with nothing left reserved. An order that no kill interrupted ends
as its card and the stock say (a kill may cancel an order whose card it
lost; nothing else may). The test prints a summary; it asserts no timing.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass

import grpc
import pytest

from shop.orders.v1 import orders_pb2
from tests.e2e.checkout_support import (
    CANCELLED,
    CHARGED_CARD,
    CONFIRMED,
    DECLINED_CARD,
    KIND,
    CheckoutMesh,
    StartStack,
    checkout_mesh,
    consistency_errors,
    eventually,
    order_request,
    read_db,
)

pytestmark = pytest.mark.e2e

ORDERS = 200
CLIENTS = 20
KILL_AFTER = (60, 130)  # kill orders once this many PlaceOrder calls have answered
SEED = 20261125  # the same plan every run
# Seed stock of at least 115: the plan below cannot exhaust these.
PLENTY = (
    "prod-aeropress",
    "prod-beans-colombia",
    "prod-beans-espresso",
    "prod-beans-kenya",
    "prod-book-barista",
    "prod-bottle-steel",
    "prod-cups-espresso",
    "prod-filters-paper",
    "prod-kettle-gooseneck",
    "prod-tamper",
    "prod-tea-sencha",
    "prod-water-filter",
)
SCARCE = ("prod-espresso-machine", "prod-teapot-cast-iron")  # 2 and 10
RETRY_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CALL_TIMEOUT_S = 20.0
RUN_BUDGET_S = 100.0  # every client gives up by then
WAIT_S = 30.0  # bound of every wait after the run
SETTLE_S = 2.0


@dataclass
class Placement:
    """One client order and what happened to its PlaceOrder."""

    request: orders_pb2.PlaceOrderRequest
    declined: bool
    scarce: bool
    first_try: float = 0.0
    last_try_end: float = 0.0
    tries: int = 0
    order: orders_pb2.Order | None = None
    error: grpc.StatusCode | None = None


def plan(rng: random.Random) -> list[Placement]:
    placements = []
    for index in range(ORDERS):
        lines = [(p, rng.randint(1, 2)) for p in rng.sample(PLENTY, rng.randint(1, 3))]
        scarce = rng.random() < 0.2
        if scarce:
            product = rng.choice(SCARCE)
            lines.append((product, 1 if product == SCARCE[0] else rng.randint(1, 3)))
        declined = rng.random() < 0.15
        customer = f"cus-load-{index % CLIENTS:02d}"
        request = order_request(customer, lines, DECLINED_CARD if declined else CHARGED_CARD)
        placements.append(Placement(request, declined, scarce))
    return placements


class Load:
    def __init__(self, mesh: CheckoutMesh, placements: list[Placement]) -> None:
        self.mesh = mesh
        self.placements = placements
        self.queue: asyncio.Queue[Placement] = asyncio.Queue()
        for placement in placements:
            self.queue.put_nowait(placement)
        self.answered = 0
        self.progress = asyncio.Event()  # set on every answer
        self.kills: list[tuple[float, float]] = []  # (killed, serving again)
        self.deadline = time.monotonic() + RUN_BUDGET_S

    async def client(self) -> None:
        while not self.queue.empty():
            placement = self.queue.get_nowait()
            await self.place(placement)

    async def place(self, placement: Placement) -> None:
        backoff = 0.05
        placement.first_try = time.monotonic()
        while True:
            placement.tries += 1
            try:
                reply = await self.mesh.orders.PlaceOrder(placement.request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                placement.error = error.code()
                if error.code() in RETRY_ON and time.monotonic() + backoff < self.deadline:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
                placement.last_try_end = time.monotonic()
                return
            placement.order = reply.order
            placement.error = None
            placement.last_try_end = time.monotonic()
            self.answered += 1
            self.progress.set()
            return

    async def chaos(self) -> None:
        for threshold in KILL_AFTER:
            while self.answered < threshold:  # bounded by the run's wait_for
                self.progress.clear()
                await self.progress.wait()
            killed = time.monotonic()
            await self.mesh.kill("orders")
            await self.mesh.restart("orders")
            self.kills.append((killed, time.monotonic()))

    def interrupted(self, placement: Placement) -> bool:
        """Whether a kill fell while the order's PlaceOrder calls were under way."""
        return any(
            placement.first_try <= serving and killed <= placement.last_try_end
            for killed, serving in self.kills
        )


async def test_200_orders_with_orders_killed_twice_lose_and_double_nothing(
    start_stack: StartStack,
) -> None:
    started = time.monotonic()
    async with checkout_mesh(start_stack) as mesh:
        placements = plan(random.Random(SEED))
        products = sorted({line.product_id for p in placements for line in p.request.lines})
        before = await mesh.stock(products)
        assert all(s.reserved == 0 for s in before.values())
        wanted = Counter[str]()
        for p in placements:
            for line in p.request.lines:
                wanted[line.product_id] += line.quantity
        assert all(wanted[p] <= before[p].available for p in PLENTY), "the plan outgrew the seed"
        assert all(wanted[p] > before[p].available for p in SCARCE), "nothing would run out"

        load = Load(mesh, placements)
        run_started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(load.chaos(), *(load.client() for _ in range(CLIENTS))),
            RUN_BUDGET_S + CALL_TIMEOUT_S,
        )
        run_s = time.monotonic() - run_started
        assert len(load.kills) == len(KILL_AFTER)
        # The kills hit calls under way (they come while the queue is not empty).
        assert any(load.interrupted(p) for p in placements)
        assert sum(p.tries for p in placements) > ORDERS  # and clients had to retry

        # Every order PlaceOrder answered with has ended.
        answered = {p.request.idempotency_key: p.order for p in placements if p.order is not None}
        assert [o.id for o in answered.values() if o.status not in KIND] == []

        # Every order in the store, answered or not, ends within the wait.
        async def all_terminal() -> list[tuple[str, str, str, str]] | None:
            rows = await asyncio.to_thread(
                read_db, mesh.orders_db, "SELECT id, idempotency_key, customer_id, step FROM orders"
            )
            done = all(step in ("confirmed", "cancelled") for *_, step in rows)
            return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows] if done else None

        rows = await eventually(all_terminal, "every stored order terminal", WAIT_S, 0.2)
        by_key = {key: order_id for order_id, key, _, _ in rows}
        # One order per request, none from nowhere: nothing lost, nothing doubled.
        assert sorted(by_key) == sorted(p.request.idempotency_key for p in placements)
        assert {key: by_key[key] for key in answered} == {k: o.id for k, o in answered.items()}

        orders = {order_id: await mesh.get_order(order_id) for order_id, *_ in rows}
        problems: list[str] = []
        for order in orders.values():
            problems += consistency_errors(order, await mesh.resolve_charge(order.id))
        assert problems == []

        # Inventory moved exactly the units of the confirmed orders.
        confirmed_units = Counter[str]()
        for order in orders.values():
            if order.status == CONFIRMED:
                for item in order.items:
                    confirmed_units[item.product_id] += item.quantity
        after = await mesh.stock(products)
        assert {p: s.reserved for p, s in after.items() if s.reserved} == {}
        moved = {p: before[p].available - after[p].available for p in products}
        assert moved == {p: confirmed_units[p] for p in products}

        # Exactly one notification per order, of its outcome's kind.
        customers = sorted({customer for _, _, customer, _ in rows})

        async def all_notified() -> dict[str, list[int]] | None:
            kinds: dict[str, list[int]] = {}
            for customer in customers:
                for n in await mesh.notifications_of(customer):
                    kinds.setdefault(n.order_id, []).append(n.kind)
            return kinds if set(kinds) >= set(orders) else None

        await eventually(all_notified, "a notification for every order", WAIT_S, 0.5)
        await asyncio.sleep(SETTLE_S)
        kinds = await all_notified()
        assert kinds is not None
        assert {i: k for i, k in kinds.items() if k != [KIND[orders[i].status]]} == {}
        assert set(kinds) == set(orders)

        # Undisturbed orders end as their card and the stock say.
        wrong = []
        for p in placements:
            order = orders[by_key[p.request.idempotency_key]]
            if p.scarce or load.interrupted(p):
                continue
            expected = CANCELLED if p.declined else CONFIRMED
            if order.status != expected:
                wrong.append(f"{order.id}: {order.cancel_reason or 'confirmed'}")
        assert wrong == []

        outcomes = Counter(orders_pb2.OrderStatus.Name(o.status) for o in orders.values())
        reasons = Counter(
            o.cancel_reason.split(":")[0].split("(")[0].strip()
            for o in orders.values()
            if o.status == CANCELLED
        )
        print(
            f"\n{len(placements)} orders from {CLIENTS} clients in {run_s:.1f}s "
            f"({time.monotonic() - started:.1f}s with start-up and checks); "
            f"orders killed {len(load.kills)}x\n"
            f"  answered {len(answered)}, unanswered {len(placements) - len(answered)}, "
            f"tries {sum(p.tries for p in placements)}, "
            f"interrupted by a kill {sum(load.interrupted(p) for p in placements)}\n"
            f"  outcomes {dict(outcomes)}\n"
            f"  cancel reasons {json.dumps(dict(reasons), indent=None)}\n"
            f"  units moved {sum(moved.values())}, notifications {len(kinds)}"
        )
