"""The orders service's use cases: place, get and list orders, and resume sagas.

`Orders.place_order` prices the lines from the catalog (never from the
client), stores the order under its idempotency key and runs the saga. One
saga per order runs at a time in this process: `_running` maps an order id
to its task, and every caller that wants the order's outcome (a concurrent
retry with the same key, the resumer) awaits that same task. The task is
shielded, so a client that hangs up does not stop a saga halfway. While a
new order is being stored its id is in `_placing`, so the resumer does not
take its saga (without the card) from the PlaceOrder about to drive it.

Each use case takes the caller's `subject` (`mesh.identity`): None for an
internal caller, who may act for any customer; otherwise the one customer
the gateway vouches for, and a request about another is `NotYourCustomer`.
That check comes after the request's own validation (an INVALID_ARGUMENT
still wins) and before anything is read on the other customer's behalf.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from opentelemetry import trace

from mesh.events import extract_context, trace_headers
from mesh.identity import check_acts_for, check_owner
from mesh.paging import PageTokens, page_size
from orders.card import Card
from orders.domain import (
    Order,
    Page,
    PlaceOrder,
    Status,
    Step,
    check_customer_id,
    check_order_id,
    new_order_id,
    priced_items,
    utcnow,
)
from orders.errors import KeyReused, NotSellable, NotYourCustomer, OrderNotFound, Unreachable
from orders.ports import Catalog
from orders.saga import Saga

log = logging.getLogger(__name__)


class OrderStore(Protocol):
    async def get(self, order_id: str) -> Order | None: ...

    async def by_key(self, idempotency_key: str) -> Order | None: ...

    async def insert(self, order: Order) -> Order:
        """Stores `order`, or returns the order that already has its key."""
        ...

    async def in_flight(self) -> list[Order]: ...

    async def by_customer(self, customer_id: str, offset: int, limit: int) -> Sequence[Order]: ...


class Orders:
    def __init__(
        self,
        store: OrderStore,
        catalog: Catalog,
        saga: Saga,
        tokens: PageTokens,
        clock: Callable[[], datetime] = utcnow,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._saga = saga
        self._tokens = tokens
        self._clock = clock
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._running: dict[str, asyncio.Task[Order]] = {}
        self._placing: set[str] = set()

    async def place_order(self, request: PlaceOrder, *, subject: str | None = None) -> Order:
        """The order after its saga; the first order placed with this key on a retry.

        Raises Unreachable when an upstream's silence cancelled the order, or
        left it pending (the resumer finishes it later).
        """
        check_acts_for(subject, "customer_id", request.customer_id, NotYourCustomer)
        existing = await self._store.by_key(request.idempotency_key)
        if existing is None:
            product_ids = [line.product_id for line in request.lines]
            prices = await self._catalog.prices(product_ids)
            try:
                items, total = priced_items(request.lines, prices)
            except ValueError as error:
                raise NotSellable(str(error)) from None
            now = self._clock()
            order = Order(
                id=new_order_id(),
                idempotency_key=request.idempotency_key,
                fingerprint=request.fingerprint(),
                customer_id=request.customer_id,
                email=request.email,
                items=items,
                total=total,
                step=Step.PLACED,
                create_time=now,
                update_time=now,
                trace_headers=trace_headers(),
            )
            self._placing.add(order.id)
            try:
                existing = await self._store.insert(order)
            finally:
                # Nothing awaits from here until `_outcome` puts the saga in `_running`.
                self._placing.discard(order.id)
        if existing.fingerprint != request.fingerprint():
            raise KeyReused(request.idempotency_key)
        result = existing if existing.terminal else await self._outcome(existing.id, request.card)
        if result.status is Status.CANCELLED and result.unreachable:
            raise Unreachable(
                result.unreachable,
                f"order {result.id} was cancelled and compensated: {result.cancel_reason}",
            )
        return result

    async def _outcome(self, order_id: str, card: Card | None) -> Order:
        try:
            return await asyncio.shield(self._drive(order_id, card))
        except Unreachable as error:
            raise Unreachable(
                error.service,
                f"order {order_id} is pending until {error.service} answers again "
                f"(it will then be completed or cancelled): {error}",
            ) from None

    def _drive(self, order_id: str, card: Card | None) -> asyncio.Task[Order]:
        task = self._running.get(order_id)
        if task is None:
            task = asyncio.create_task(self._saga.drive(order_id, card), name=f"saga {order_id}")
            self._running[order_id] = task
            task.add_done_callback(lambda _: self._running.pop(order_id, None))
            task.add_done_callback(_log_failure)
        return task

    async def resume_in_flight(self) -> int:
        """Drives every unfinished saga no task is running (after a restart, or a
        stall); returns how many were started. Each continues its order's trace."""
        started = 0
        for order in await self._store.in_flight():
            if order.id in self._running or order.id in self._placing:
                continue
            with self._tracer.start_as_current_span(
                "resume checkout saga",
                context=extract_context(order.trace_headers),
                attributes={"order.id": order.id, "saga.step": order.step.value},
            ):
                # The task copies the current context: its spans join the order's trace.
                self._drive(order.id, None)
            started += 1
        return started

    async def stop(self) -> None:
        """Cancels the sagas still running: each resumes from its last persisted
        step when the service starts again."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def get_order(self, order_id: str, *, subject: str | None = None) -> Order:
        check_order_id(order_id)
        order = await self._store.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        check_owner(subject, "id", f"order {order_id!r}", order.customer_id, NotYourCustomer)
        return order

    async def list_orders(
        self, customer_id: str, requested_size: int, page_token: str, *, subject: str | None = None
    ) -> Page:
        check_customer_id(customer_id)
        size = page_size(requested_size)
        scope = "customer:" + customer_id
        offset = self._tokens.offset(page_token, scope=scope)
        check_acts_for(subject, "customer_id", customer_id, NotYourCustomer)
        # One extra row tells whether a next page exists without a COUNT.
        rows = await self._store.by_customer(customer_id, offset, size + 1)
        if len(rows) <= size:
            return Page(orders=rows, next_page_token="")
        return Page(
            orders=rows[:size], next_page_token=self._tokens.issue(offset + size, scope=scope)
        )


def _log_failure(task: asyncio.Task[Order]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, Unreachable):
        log.warning("saga paused: %s", error)
    elif error is not None:
        log.error("saga failed", exc_info=error)
