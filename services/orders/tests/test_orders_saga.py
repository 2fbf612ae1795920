"""The checkout saga over in-memory inventory and payments and a real SQLite store.

The fakes answer at once; `errors[method]` are raised by that method's next
calls, one per call, and a method in `down` raises Unreachable every time.
The saga's backoff sleeps through an injected no-op, so retries cost nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from mesh.events import ORDER_CANCELLED, ORDER_CONFIRMED
from orders.card import Card
from orders.domain import Line, Money, Order, OrderItem, Step
from orders.errors import Unreachable
from orders.events import OutboxEvent
from orders.ports import PaymentOutcome, Refused
from orders.saga import Saga, SagaPolicy
from orders.store import SqliteOrderStore
from shop.events.v1 import events_pb2

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
T1 = datetime(2026, 3, 4, 5, 6, 8, tzinfo=UTC)
CARD = Card("4242424242424242", 12, 2030, "123", "Ada Lovelace")
TOTAL = Money("EUR", 2 * 1250 + 300)
PAID = PaymentOutcome("pay-1", charged=True)
OnCall = Callable[[str], Awaitable[None]]


@dataclass
class FakeInventory:
    calls: list[str] = field(default_factory=list)
    order_ids: set[str] = field(default_factory=set)
    reserved: list[Line] = field(default_factory=list)
    errors: dict[str, list[Exception]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    on_call: OnCall | None = None

    async def _answer(self, method: str, order_id: str) -> None:
        self.calls.append(method)
        self.order_ids.add(order_id)
        if self.on_call is not None:
            await self.on_call(method)
        if method in self.down:
            raise Unreachable("inventory", f"{method}: connection refused")
        if self.errors.get(method):
            raise self.errors[method].pop(0)

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        await self._answer("reserve", order_id)
        self.reserved = list(lines)

    async def commit(self, order_id: str) -> None:
        await self._answer("commit", order_id)

    async def release(self, order_id: str) -> None:
        await self._answer("release", order_id)


@dataclass
class FakePayments:
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, idempotency key)
    charges: list[tuple[str, Money, Card]] = field(default_factory=list)  # answered ones
    refunds: list[tuple[str, str, str]] = field(default_factory=list)  # key, payment, reason
    outcome: PaymentOutcome = PAID  # what a charge answers
    resolved: PaymentOutcome | None = None  # what resolve_charge answers
    errors: dict[str, list[Exception]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    on_call: OnCall | None = None

    async def _answer(self, method: str, key: str) -> None:
        self.calls.append((method, key))
        if self.on_call is not None:
            await self.on_call(method)
        if method in self.down:
            raise Unreachable("payments", f"{method}: deadline exceeded")
        if self.errors.get(method):
            raise self.errors[method].pop(0)

    def count(self, method: str) -> int:
        return sum(1 for called, _ in self.calls if called == method)

    async def charge(
        self, idempotency_key: str, order_id: str, amount: Money, card: Card
    ) -> PaymentOutcome:
        await self._answer("charge", idempotency_key)
        self.charges.append((order_id, amount, card))
        return self.outcome

    async def resolve_charge(self, idempotency_key: str) -> PaymentOutcome | None:
        await self._answer("resolve_charge", idempotency_key)
        return self.resolved

    async def refund(self, idempotency_key: str, payment_id: str, reason: str) -> None:
        await self._answer("refund", idempotency_key)
        self.refunds.append((idempotency_key, payment_id, reason))


class StepLog:
    """The real store, recording each step the saga writes as (previous, next)."""

    def __init__(self, store: SqliteOrderStore) -> None:
        self.store = store
        self.steps: list[tuple[Step, Step]] = []

    async def get(self, order_id: str) -> Order | None:
        return await self.store.get(order_id)

    async def save(self, order: Order, previous: Step) -> None:
        await self.store.save(order, previous)
        self.steps.append((previous, order.step))

    async def finish(self, order: Order, previous: Step, event: OutboxEvent) -> None:
        await self.store.finish(order, previous, event)
        self.steps.append((previous, order.step))


@dataclass
class Rig:
    store: SqliteOrderStore
    log: StepLog
    inventory: FakeInventory = field(default_factory=FakeInventory)
    payments: FakePayments = field(default_factory=FakePayments)
    sleeps: list[float] = field(default_factory=list)
    finished: int = 0

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def _on_finished(self) -> None:
        self.finished += 1

    def saga(self, retry_budget_s: float = 60.0) -> Saga:
        """`retry_budget_s=0`: the first Unreachable of a step is past the budget."""
        return Saga(
            self.log,
            self.inventory,
            self.payments,
            clock=lambda: T1,
            policy=SagaPolicy(retry_budget_s=retry_budget_s),
            on_finished=self._on_finished,
            sleep=self._sleep,
        )

    async def placed(self, step: Step = Step.PLACED, **changes: object) -> Order:
        order = Order(
            id="ord-1",
            idempotency_key="key-1",
            fingerprint="fp",
            customer_id="cus-1",
            email="ada@example.com",
            items=(OrderItem("p-1", 2, Money("EUR", 1250)), OrderItem("p-2", 1, Money("EUR", 300))),
            total=TOTAL,
            step=step,
            create_time=T0,
            update_time=T0,
        )
        return await self.store.insert(replace(order, **changes))  # type: ignore[arg-type]

    async def event(self) -> OutboxEvent:
        [event] = await self.store.unsent(10)
        return event

    async def stored(self) -> Order:
        order = await self.store.get("ord-1")
        assert order is not None
        return order


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = await SqliteOrderStore.open(":memory:")
    try:
        yield Rig(store, StepLog(store))
    finally:
        await store.close()


def cancelled_reason(event: OutboxEvent) -> str:
    assert event.subject == ORDER_CANCELLED
    message = events_pb2.OrderCancelled.FromString(event.payload)
    assert message.event_id == event.event_id
    assert message.order_id == event.order_id == "ord-1"
    return message.reason


async def test_happy_path_reserves_charges_commits_and_confirms(rig: Rig) -> None:
    await rig.placed()
    order = await rig.saga().drive("ord-1", CARD)

    assert rig.log.steps == [
        (Step.PLACED, Step.RESERVED),
        (Step.RESERVED, Step.CHARGED),
        (Step.CHARGED, Step.CONFIRMED),
    ]
    assert order == await rig.stored()
    assert order.step is Step.CONFIRMED
    assert (order.payment_id, order.charged, order.cancel_reason) == ("pay-1", True, "")
    assert order.update_time == T1
    assert rig.inventory.calls == ["reserve", "commit"]
    assert rig.inventory.order_ids == {"ord-1"}
    assert rig.inventory.reserved == [Line("p-1", 2), Line("p-2", 1)]
    assert rig.payments.calls == [("charge", "ord-1/charge")]
    assert rig.payments.charges == [("ord-1", TOTAL, CARD)]
    assert rig.finished == 1

    event = await rig.event()
    assert event.subject == ORDER_CONFIRMED
    assert event.order_id == "ord-1"
    message = events_pb2.OrderConfirmed.FromString(event.payload)
    assert message.event_id == event.event_id
    assert message.order_id == "ord-1"
    assert (message.customer_id, message.email) == ("cus-1", "ada@example.com")
    assert (message.total.currency_code, message.total.amount_minor) == ("EUR", 2800)
    assert message.payment_id == "pay-1"
    assert message.occur_time.ToDatetime(tzinfo=UTC) == T1


async def test_each_step_is_persisted_before_the_next_call(rig: Rig) -> None:
    await rig.placed()
    seen: dict[str, tuple[Step, str]] = {}

    async def look(method: str) -> None:
        order = await rig.stored()
        seen[method] = (order.step, order.payment_id)

    rig.inventory.on_call = rig.payments.on_call = look
    await rig.saga().drive("ord-1", CARD)
    assert seen == {
        "reserve": (Step.PLACED, ""),
        "charge": (Step.RESERVED, ""),
        "commit": (Step.CHARGED, "pay-1"),
    }


async def test_out_of_stock_cancels_without_release_or_charge(rig: Rig) -> None:
    await rig.placed()
    rig.inventory.errors["reserve"] = [Refused("out of stock: p-1 has 1 left")]
    order = await rig.saga().drive("ord-1", CARD)

    assert order.step is Step.CANCELLED
    assert order == await rig.stored()
    assert "out of stock: p-1 has 1 left" in order.cancel_reason
    assert order.unreachable == ""
    assert rig.log.steps == [(Step.PLACED, Step.RELEASED), (Step.RELEASED, Step.CANCELLED)]
    assert rig.inventory.calls == ["reserve"]
    assert rig.payments.calls == []
    assert cancelled_reason(await rig.event()) == order.cancel_reason
    assert rig.finished == 1


async def test_a_declined_card_releases_the_stock_and_refunds_nothing(rig: Rig) -> None:
    await rig.placed()
    rig.payments.outcome = PaymentOutcome("pay-9", charged=False, decline_reason="card_declined")
    order = await rig.saga().drive("ord-1", CARD)

    assert order.step is Step.CANCELLED
    assert "card_declined" in order.cancel_reason
    assert (order.payment_id, order.charged, order.unreachable) == ("pay-9", False, "")
    assert rig.log.steps == [
        (Step.PLACED, Step.RESERVED),
        (Step.RESERVED, Step.COMPENSATING),
        (Step.COMPENSATING, Step.RELEASED),
        (Step.RELEASED, Step.CANCELLED),
    ]
    assert rig.inventory.calls == ["reserve", "release"]
    assert rig.payments.calls == [("charge", "ord-1/charge")]
    assert rig.payments.refunds == []
    assert "card_declined" in cancelled_reason(await rig.event())


async def test_a_refused_card_is_compensated_like_a_decline(rig: Rig) -> None:
    await rig.placed()
    rig.payments.errors["charge"] = [Refused("payments answered INVALID_ARGUMENT")]
    order = await rig.saga().drive("ord-1", CARD)
    assert order.step is Step.CANCELLED
    assert "refused" in order.cancel_reason
    assert rig.inventory.calls == ["reserve", "release"]
    assert rig.payments.refunds == []


async def test_a_refused_commit_refunds_and_releases(rig: Rig) -> None:
    await rig.placed()
    rig.inventory.errors["commit"] = [Refused("reservation expired")]
    order = await rig.saga().drive("ord-1", CARD)

    assert order.step is Step.CANCELLED
    assert "reservation expired" in order.cancel_reason
    assert order.payment_id == "pay-1"
    assert not order.charged  # the money went back
    assert rig.inventory.calls == ["reserve", "commit", "release"]
    assert rig.payments.refunds == [("ord-1/refund", "pay-1", order.cancel_reason)]
    assert rig.payments.calls == [("charge", "ord-1/charge"), ("refund", "ord-1/refund")]
    assert rig.log.steps[-3:] == [
        (Step.CHARGED, Step.COMPENSATING),
        (Step.COMPENSATING, Step.RELEASED),
        (Step.RELEASED, Step.CANCELLED),
    ]
    assert "reservation expired" in cancelled_reason(await rig.event())


async def test_a_refused_release_still_refunds(rig: Rig) -> None:
    await rig.placed()
    rig.inventory.errors["commit"] = [Refused("reservation expired")]
    rig.inventory.errors["release"] = [Refused("nothing held")]
    order = await rig.saga().drive("ord-1", CARD)
    assert order.step is Step.CANCELLED
    assert [key for key, _, _ in rig.payments.refunds] == ["ord-1/refund"]


async def test_inventory_silent_at_reserve_compensates_and_cancels(rig: Rig) -> None:
    await rig.placed()
    rig.inventory.down.add("reserve")
    order = await rig.saga(retry_budget_s=0).drive("ord-1", CARD)

    assert order.step is Step.CANCELLED
    assert order.unreachable == "inventory"
    assert "nothing was charged" in order.cancel_reason
    # The reservation may have landed unseen: it is released all the same.
    assert rig.log.steps == [
        (Step.PLACED, Step.COMPENSATING),
        (Step.COMPENSATING, Step.RELEASED),
        (Step.RELEASED, Step.CANCELLED),
    ]
    assert "release" in rig.inventory.calls
    assert "commit" not in rig.inventory.calls
    assert rig.payments.calls == []
    assert cancelled_reason(await rig.event()) == order.cancel_reason
    assert (await rig.stored()).unreachable == "inventory"


async def test_payments_silent_at_charge_resolves_and_cancels_if_nothing_charged(
    rig: Rig,
) -> None:
    await rig.placed()
    rig.payments.down.add("charge")
    rig.payments.resolved = None
    order = await rig.saga(retry_budget_s=0).drive("ord-1", CARD)

    assert order.step is Step.CANCELLED
    assert order.unreachable == "payments"
    assert "nothing was charged" in order.cancel_reason
    assert ("resolve_charge", "ord-1/charge") in rig.payments.calls
    assert {key for _, key in rig.payments.calls} == {"ord-1/charge"}
    assert rig.payments.charges == []
    assert rig.payments.refunds == []
    assert rig.inventory.calls == ["reserve", "release"]


async def test_payments_silent_at_charge_goes_forward_if_the_charge_landed(rig: Rig) -> None:
    await rig.placed()
    rig.payments.down.add("charge")
    rig.payments.resolved = PaymentOutcome("pay-7", charged=True)
    order = await rig.saga(retry_budget_s=0).drive("ord-1", CARD)

    assert order.step is Step.CONFIRMED
    assert (order.payment_id, order.charged, order.unreachable) == ("pay-7", True, "")
    assert rig.inventory.calls == ["reserve", "commit"]
    assert rig.payments.refunds == []
    event = await rig.event()
    assert events_pb2.OrderConfirmed.FromString(event.payload).payment_id == "pay-7"


async def test_a_charge_resolved_as_declined_is_not_unreachable(rig: Rig) -> None:
    await rig.placed()
    rig.payments.down.add("charge")
    rig.payments.resolved = PaymentOutcome("pay-7", charged=False, decline_reason="card_declined")
    order = await rig.saga(retry_budget_s=0).drive("ord-1", CARD)
    assert order.step is Step.CANCELLED
    assert order.unreachable == ""
    assert "card_declined" in order.cancel_reason
    assert rig.payments.refunds == []


async def test_unreachable_that_clears_within_the_budget_is_retried(rig: Rig) -> None:
    await rig.placed()
    blip = Unreachable("inventory", "UNAVAILABLE")
    rig.inventory.errors["reserve"] = [blip, blip]
    rig.inventory.errors["commit"] = [Unreachable("inventory", "DEADLINE_EXCEEDED")]
    rig.payments.errors["charge"] = [Unreachable("payments", "UNAVAILABLE")] * 3
    order = await rig.saga(retry_budget_s=60).drive("ord-1", CARD)

    assert order.step is Step.CONFIRMED
    assert order.unreachable == ""
    assert rig.inventory.calls == ["reserve"] * 3 + ["commit"] * 2
    # Every retry of the charge carries the same key: payments charges once.
    assert rig.payments.calls == [("charge", "ord-1/charge")] * 4
    assert len(rig.payments.charges) == 1
    assert len(rig.sleeps) == 2 + 1 + 3
    assert all(pause >= 0 for pause in rig.sleeps)
    assert rig.log.steps == [
        (Step.PLACED, Step.RESERVED),
        (Step.RESERVED, Step.CHARGED),
        (Step.CHARGED, Step.CONFIRMED),
    ]


async def test_backoff_pauses_stay_within_the_policy(rig: Rig) -> None:
    await rig.placed()
    rig.inventory.errors["reserve"] = [Unreachable("inventory", "UNAVAILABLE")] * 8
    await rig.saga(retry_budget_s=60).drive("ord-1", CARD)
    policy = SagaPolicy()
    assert len(rig.sleeps) == 8
    assert rig.sleeps[0] <= policy.first_backoff_s
    assert all(0 <= pause <= policy.max_backoff_s for pause in rig.sleeps)


@pytest.mark.parametrize(
    ("resolved", "step", "reason"),
    [
        (PaymentOutcome("pay-3", charged=True), Step.CONFIRMED, ""),
        (None, Step.CANCELLED, "the checkout was interrupted"),
        (PaymentOutcome("pay-3", charged=False, refunded=True), Step.CANCELLED, "refunded"),
    ],
)
async def test_a_resumed_charge_is_resolved_never_made(
    rig: Rig, resolved: PaymentOutcome | None, step: Step, reason: str
) -> None:
    await rig.placed(Step.RESERVED)
    rig.payments.resolved = resolved
    order = await rig.saga().drive("ord-1", None)

    assert order.step is step
    assert reason in order.cancel_reason
    assert order.unreachable == ""
    assert rig.payments.charges == []
    assert ("charge", "ord-1/charge") not in rig.payments.calls
    assert rig.payments.calls[0] == ("resolve_charge", "ord-1/charge")
    assert rig.payments.refunds == []  # nothing is held in any of these
    expected_inventory = ["commit"] if step is Step.CONFIRMED else ["release"]
    assert rig.inventory.calls == expected_inventory


async def test_a_silent_release_pauses_the_saga_until_a_later_drive(rig: Rig) -> None:
    await rig.placed()
    rig.payments.outcome = PaymentOutcome("pay-9", charged=False, decline_reason="do_not_honor")
    rig.inventory.down.add("release")
    saga = rig.saga(retry_budget_s=0)
    with pytest.raises(Unreachable) as caught:
        await saga.drive("ord-1", CARD)
    assert caught.value.service == "inventory"

    paused = await rig.stored()
    assert paused.step is Step.COMPENSATING
    assert "do_not_honor" in paused.cancel_reason
    assert await rig.store.unsent(10) == []
    assert rig.finished == 0

    rig.inventory.down.clear()
    order = await saga.drive("ord-1", None)
    assert order.step is Step.CANCELLED
    assert order.cancel_reason == paused.cancel_reason
    assert rig.inventory.calls[-1] == "release"
    assert rig.payments.count("charge") == 1  # not charged again on the second drive
    assert rig.payments.count("resolve_charge") == 0
    assert "do_not_honor" in cancelled_reason(await rig.event())
    assert rig.finished == 1


async def test_a_silent_refund_keeps_the_money_owed_until_a_later_drive(rig: Rig) -> None:
    await rig.placed()
    rig.inventory.errors["commit"] = [Refused("reservation expired")]
    rig.payments.down.add("refund")
    saga = rig.saga(retry_budget_s=0)
    with pytest.raises(Unreachable):
        await saga.drive("ord-1", CARD)

    paused = await rig.stored()
    assert paused.step is Step.RELEASED
    assert paused.charged  # the refund is still owed, and persisted as such
    assert rig.payments.refunds == []
    assert await rig.store.unsent(10) == []

    rig.payments.down.clear()
    order = await saga.drive("ord-1", None)
    assert order.step is Step.CANCELLED
    assert not order.charged
    assert rig.payments.refunds == [("ord-1/refund", "pay-1", paused.cancel_reason)]
    assert rig.inventory.calls.count("release") == 1


async def test_a_silent_commit_never_compensates(rig: Rig) -> None:
    await rig.placed()
    rig.inventory.down.add("commit")
    saga = rig.saga(retry_budget_s=0)
    with pytest.raises(Unreachable):
        await saga.drive("ord-1", CARD)
    assert (await rig.stored()).step is Step.CHARGED
    assert "release" not in rig.inventory.calls
    assert rig.payments.refunds == []

    rig.inventory.down.clear()
    assert (await saga.drive("ord-1", None)).step is Step.CONFIRMED
    assert rig.payments.count("charge") == 1
    assert rig.payments.count("resolve_charge") == 0


async def test_payments_silent_even_for_resolve_leaves_the_order_reserved(rig: Rig) -> None:
    await rig.placed()
    rig.payments.down.update({"charge", "resolve_charge"})
    with pytest.raises(Unreachable):
        await rig.saga(retry_budget_s=0).drive("ord-1", CARD)
    assert (await rig.stored()).step is Step.RESERVED
    assert "release" not in rig.inventory.calls


async def test_a_finished_order_is_returned_untouched(rig: Rig) -> None:
    await rig.placed(Step.CONFIRMED)
    order = await rig.saga().drive("ord-1", CARD)
    assert order.step is Step.CONFIRMED
    assert rig.inventory.calls == []
    assert rig.payments.calls == []
    assert rig.log.steps == []
    assert rig.finished == 0


async def test_driving_an_unknown_order_is_a_lookup_error(rig: Rig) -> None:
    with pytest.raises(LookupError):
        await rig.saga().drive("ord-404", CARD)


async def test_the_event_carries_the_orders_stored_trace_context(rig: Rig) -> None:
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    await rig.placed(trace_headers=headers)
    await rig.saga().drive("ord-1", CARD)
    assert dict((await rig.event()).headers) == headers


async def test_a_test_pause_holds_the_saga_after_its_step(rig: Rig) -> None:
    await rig.placed()
    saga = Saga(
        rig.log,
        rig.inventory,
        rig.payments,
        clock=lambda: T1,
        policy=SagaPolicy(pause_after=Step.RESERVED),
    )
    driving = asyncio.create_task(saga.drive("ord-1", CARD))
    try:
        async with asyncio.timeout(5):
            while (await rig.stored()).step is not Step.RESERVED:
                pass
        for _ in range(10):
            await asyncio.sleep(0)
        assert not driving.done()
        assert rig.payments.calls == []
    finally:
        driving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await driving
    assert (await rig.stored()).step is Step.RESERVED
