"""The checkout saga: reserve stock, charge, commit stock, confirm; or compensate.

Each step's outcome is persisted (`OrderRepository.save`) before the next
call, and every call carries a key derived from the order (the order id for
inventory, `<order>/charge` and `<order>/refund` for payments), so a step
repeated after a crash or a lost response does nothing twice. `drive` reads
the order's step from the store and continues from there: the same code runs
a new order and resumes one after a restart.

Failures come in two kinds (see `orders.ports`):
- `Refused`, a business answer (too little stock, a declined card): the saga
  compensates at once and the order ends CANCELLED with a readable reason.
- `Unreachable`, a transport failure: the step is retried with exponential
  backoff for `retry_budget_s`. Past that budget, before the charge the saga
  compensates; from the charge on (the pivot: money has moved) it goes
  forward only, because releasing stock that inventory may already have
  committed would be refused. A step that still cannot run (compensation
  included) raises `Unreachable` out of `drive`, leaving the order where it
  is for the next `drive` (the service's resumer) to finish.

A charge whose answer was lost, or that was in flight when the process died
(the card is never stored, so it cannot be retried), is settled with
payments' ResolveCharge: it returns the payment if one was made, and
otherwise retires the key so that no late charge can land after the order
was cancelled.

The backoff is a ten-line loop rather than a retry library: the saga needs
only "retry Unreachable until a deadline", and an injected `sleep` keeps the
unit tests instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, TypeVar

from opentelemetry import trace

from mesh.deadlines import incoming_deadline, remaining
from mesh.events import trace_headers
from orders.card import Card
from orders.domain import Line, Order, Step
from orders.errors import Unreachable
from orders.events import OutboxEvent, order_cancelled, order_confirmed
from orders.ports import Inventory, PaymentOutcome, Payments, Refused

log = logging.getLogger(__name__)
T = TypeVar("T")


class OrderRepository(Protocol):
    async def get(self, order_id: str) -> Order | None: ...

    async def save(self, order: Order, previous: Step) -> None:
        """Stores the order's new step; fails if it is no longer at `previous`."""
        ...

    async def finish(self, order: Order, previous: Step, event: OutboxEvent) -> None:
        """Stores a terminal order and its event in one transaction."""
        ...


@dataclass(frozen=True)
class SagaPolicy:
    # How long a transport failure of one step is retried.
    retry_budget_s: float = 10.0
    first_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    # Test only (ORDERS_TEST_PAUSE_AFTER_STEP): hold every saga once this step
    # is persisted, so a test can kill the process exactly there.
    pause_after: Step | None = None


class Saga:
    def __init__(
        self,
        store: OrderRepository,
        inventory: Inventory,
        payments: Payments,
        clock: Callable[[], datetime],
        policy: SagaPolicy = SagaPolicy(),
        on_finished: Callable[[], None] = lambda: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._payments = payments
        self._clock = clock
        self._policy = policy
        self._on_finished = on_finished
        self._sleep = sleep

    async def drive(self, order_id: str, card: Card | None) -> Order:
        """Runs the order's saga from its persisted step to CONFIRMED or CANCELLED.

        `card` is None when the saga resumes without the request that started
        it. Raises Unreachable if an upstream stays silent past the budget at
        a step that cannot be skipped; the order then stays at that step.
        """
        order = await self._store.get(order_id)
        if order is None:
            raise LookupError(f"no order {order_id!r} to drive")
        while not order.terminal:
            previous = order.step
            order = await self._next(order, card)
            if order.terminal:
                await self._store.finish(order, previous, self._event(order))
                self._on_finished()
            else:
                await self._store.save(order, previous)
            trace.get_current_span().add_event(
                "saga step", {"order.id": order.id, "saga.step": order.step.value}
            )
            log.info("order %s: %s -> %s", order.id, previous.value, order.step.value)
            if order.step is self._policy.pause_after:
                log.warning("order %s: test pause after %s", order.id, order.step.value)
                await asyncio.Event().wait()  # until the test kills the process
        return order

    async def _next(self, order: Order, card: Card | None) -> Order:
        match order.step:
            case Step.PLACED:
                return await self._reserve(order)
            case Step.RESERVED:
                return await self._charge(order, card)
            case Step.CHARGED:
                return await self._commit(order)
            case Step.COMPENSATING:
                try:
                    await self._retrying(lambda: self._inventory.release(order.id))
                except Refused as refused:  # e.g. committed already: nothing to give back
                    log.warning("order %s: release refused: %s", order.id, refused)
                return self._at(order, Step.RELEASED)
            case Step.RELEASED:
                if order.charged:
                    try:
                        await self._retrying(
                            lambda: self._payments.refund(
                                order.refund_key, order.payment_id, order.cancel_reason
                            )
                        )
                    except Refused as refused:
                        log.error("order %s: refund refused: %s", order.id, refused)
                return replace(self._at(order, Step.CANCELLED), charged=False)
        raise AssertionError(f"no step after {order.step}")

    async def _commit(self, order: Order) -> Order:
        try:
            await self._retrying(lambda: self._inventory.commit(order.id))
        except Refused as refused:
            return self._cancelling(
                order, Step.COMPENSATING, f"the stock could not be committed: {refused}"
            )
        return self._at(order, Step.CONFIRMED)

    async def _reserve(self, order: Order) -> Order:
        lines = [Line(item.product_id, item.quantity) for item in order.items]
        try:
            await self._retrying(lambda: self._inventory.reserve(order.id, lines))
        except Refused as refused:
            # Nothing is held: straight to the refund check, which has nothing to do.
            return self._cancelling(order, Step.RELEASED, str(refused))
        except Unreachable as error:
            return self._cancelling(
                order,
                Step.COMPENSATING,  # the reservation may have landed unseen
                "the stock could not be reserved because inventory did not answer; "
                "nothing was charged",
                unreachable=error.service,
            )
        return self._at(order, Step.RESERVED)

    async def _charge(self, order: Order, card: Card | None) -> Order:
        unreachable = ""
        outcome: PaymentOutcome | None
        if card is None:  # resumed: whatever happened to the charge, settle it
            outcome = await self._resolve(order)
        else:
            try:
                outcome = await self._retrying(
                    lambda: self._payments.charge(order.charge_key, order.id, order.total, card)
                )
            except Refused as refused:
                return self._cancelling(
                    order, Step.COMPENSATING, f"the card was refused: {refused}"
                )
            except Unreachable as error:
                unreachable = error.service
                outcome = await self._resolve(order)
        if outcome is None:
            why = "payments did not answer" if unreachable else "the checkout was interrupted"
            return self._cancelling(
                order,
                Step.COMPENSATING,
                f"the payment could not be completed because {why}; nothing was charged",
                unreachable=unreachable,
            )
        paid = replace(order, payment_id=outcome.payment_id, charged=outcome.charged)
        if outcome.charged:
            return self._at(paid, Step.CHARGED)
        reason = outcome.decline_reason or "declined"
        return self._cancelling(paid, Step.COMPENSATING, f"the card was declined ({reason})")

    async def _resolve(self, order: Order) -> PaymentOutcome | None:
        outcome = await self._retrying(lambda: self._payments.resolve_charge(order.charge_key))
        if outcome is not None and outcome.refunded:
            # Refunded already (by an earlier run of this compensation): nothing held.
            return replace(outcome, charged=False, decline_reason="refunded")
        return outcome

    def _at(self, order: Order, step: Step) -> Order:
        return replace(order, step=step, update_time=self._clock())

    def _cancelling(self, order: Order, step: Step, reason: str, unreachable: str = "") -> Order:
        return replace(
            self._at(order, step),
            cancel_reason=reason,
            unreachable=unreachable or order.unreachable,
        )

    def _event(self, order: Order) -> OutboxEvent:
        # The saga's live trace context if tracing is on, else the one the
        # order was created under (both are empty when tracing is off).
        headers = trace_headers() or dict(order.trace_headers)
        if order.step is Step.CONFIRMED:
            return order_confirmed(order, order.update_time, headers)
        return order_cancelled(order, order.update_time, headers)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call` until it does not raise Unreachable, for the retry budget."""
        deadline = time.monotonic() + self._policy.retry_budget_s
        backoff = self._policy.first_backoff_s
        while True:
            try:
                with _while_the_client_waits():
                    return await call()
            except Unreachable as error:
                # Full jitter: replicas retrying together do not hit together.
                pause = random.uniform(0, backoff)
                if time.monotonic() + pause > deadline:
                    raise
                log.info("%s; retrying in %.2fs", error, pause)
                await self._sleep(pause)
                backoff = min(backoff * 2, self._policy.max_backoff_s)


def _while_the_client_waits() -> contextlib.AbstractContextManager[None]:
    """A step's calls are bounded by the client's deadline while the client
    waits (mesh.deadlines); once it has passed, the saga carries on by itself,
    since an order must still end confirmed or compensated."""
    left = remaining()
    if left is not None and left <= 0:
        return incoming_deadline(None)
    return contextlib.nullcontext()
