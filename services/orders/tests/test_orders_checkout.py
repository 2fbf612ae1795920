"""Orders (place, get, list, resume, stop) over a fake catalog, a saga over fake
inventory and payments, and a real in-memory SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from mesh.identity import ActsForAnotherCustomer
from mesh.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageTokens
from mesh.status import InvalidField, status_code
from orders.card import Card
from orders.checkout import Orders
from orders.domain import (
    Line,
    Money,
    Order,
    OrderItem,
    PlaceOrder,
    Status,
    Step,
    check_place_order,
)
from orders.errors import (
    STATUSES,
    InvalidArgument,
    KeyReused,
    NotSellable,
    NotYourCustomer,
    OrderNotFound,
    ProductNotFound,
    Unreachable,
)
from orders.ports import PaymentOutcome, Refused
from orders.saga import Saga, SagaPolicy
from orders.store import SqliteOrderStore

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
CARD = Card("4242424242424242", 12, 2030, "123", "Ada Lovelace")
PRICES = {"p-1": Money("EUR", 1250), "p-2": Money("EUR", 300), "p-usd": Money("USD", 999)}
LINES = (Line("p-1", 2), Line("p-2", 1))
PAID = PaymentOutcome("pay-1", charged=True)
OnCall = Callable[[str], Awaitable[None]]


def request(
    key: str = "key-1",
    lines: Sequence[Line] = LINES,
    customer: str = "cus-1",
    email: str = "ada@example.com",
) -> PlaceOrder:
    return check_place_order(key, customer, email, lines, CARD, NOW)


@dataclass
class FakeCatalog:
    prices_of: dict[str, Money] = field(default_factory=lambda: dict(PRICES))
    calls: list[list[str]] = field(default_factory=list)

    async def prices(self, product_ids: Sequence[str]) -> dict[str, Money]:
        self.calls.append(list(product_ids))
        for index, product_id in enumerate(product_ids):
            if product_id not in self.prices_of:
                raise ProductNotFound(f"lines[{index}].product_id", product_id)
        return {product_id: self.prices_of[product_id] for product_id in product_ids}


@dataclass
class FakeInventory:
    calls: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    errors: dict[str, list[Exception]] = field(default_factory=dict)
    on_call: OnCall | None = None

    async def _answer(self, method: str) -> None:
        self.calls.append(method)
        if self.on_call is not None:
            await self.on_call(method)
        if method in self.down:
            raise Unreachable("inventory", f"{method}: connection refused")
        if self.errors.get(method):
            raise self.errors[method].pop(0)

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        await self._answer("reserve")

    async def commit(self, order_id: str) -> None:
        await self._answer("commit")

    async def release(self, order_id: str) -> None:
        await self._answer("release")


@dataclass
class FakePayments:
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, idempotency key)
    amounts: list[Money] = field(default_factory=list)
    outcome: PaymentOutcome = PAID
    resolved: PaymentOutcome | None = None

    def count(self, method: str) -> int:
        return sum(1 for called, _ in self.calls if called == method)

    async def charge(
        self, idempotency_key: str, order_id: str, amount: Money, card: Card
    ) -> PaymentOutcome:
        assert card == CARD
        self.calls.append(("charge", idempotency_key))
        self.amounts.append(amount)
        return self.outcome

    async def resolve_charge(self, idempotency_key: str) -> PaymentOutcome | None:
        self.calls.append(("resolve_charge", idempotency_key))
        return self.resolved

    async def refund(self, idempotency_key: str, payment_id: str, reason: str) -> None:
        self.calls.append(("refund", idempotency_key))


class Ticker:
    """A clock one second further on each reading: create times never tie."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class World:
    store: SqliteOrderStore
    catalog: FakeCatalog
    inventory: FakeInventory
    payments: FakePayments
    orders: Orders


Build = Callable[..., Awaitable[World]]


async def _no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    """Builds a world; `retry_budget_s=0` makes the first Unreachable final."""
    worlds: list[World] = []

    async def make(retry_budget_s: float = 60.0, store: SqliteOrderStore | None = None) -> World:
        store = store or await SqliteOrderStore.open(":memory:")
        inventory, payments, clock = FakeInventory(), FakePayments(), Ticker()
        saga = Saga(
            store,
            inventory,
            payments,
            clock=clock,
            policy=SagaPolicy(retry_budget_s=retry_budget_s),
            sleep=_no_sleep,
        )
        catalog = FakeCatalog()
        world = World(
            store, catalog, inventory, payments, Orders(store, catalog, saga, PageTokens(), clock)
        )
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        await world.orders.stop()
    for store in {id(world.store): world.store for world in worlds}.values():
        await store.close()


@pytest.fixture
async def world(build: Build) -> World:
    return await build()


def stored_order(oid: str, step: Step, customer: str = "cus-1", at: datetime = NOW) -> Order:
    return Order(
        id=oid,
        idempotency_key=f"key-{oid}",
        fingerprint="fp",
        customer_id=customer,
        email="ada@example.com",
        items=(OrderItem("p-1", 1, Money("EUR", 1250)),),
        total=Money("EUR", 1250),
        step=step,
        create_time=at,
        update_time=at,
    )


async def settled(store: SqliteOrderStore, order_id: str) -> Order:
    """The order once its saga (running in a task) has ended."""
    async with asyncio.timeout(5):
        while True:
            order = await store.get(order_id)
            assert order is not None
            if order.terminal:
                return order
            await asyncio.sleep(0)


class Gate:
    """Holds the calls of one method until opened; `entered` is set on the first."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def reached(self) -> None:
        async with asyncio.timeout(5):  # a failure, not a hang, if the call never comes
            await self.entered.wait()

    async def __call__(self, method: str) -> None:
        if method == self.method:
            self.entered.set()
            await self.open.wait()


async def test_prices_come_from_the_catalog(world: World) -> None:
    world.catalog.prices_of["p-1"] = Money("EUR", 1999)
    place = request()
    order = await world.orders.place_order(place)

    assert order.status is Status.CONFIRMED
    assert order.items == (
        OrderItem("p-1", 2, Money("EUR", 1999)),
        OrderItem("p-2", 1, Money("EUR", 300)),
    )
    assert order.total == Money("EUR", 2 * 1999 + 300)
    assert world.payments.amounts == [order.total]
    assert world.catalog.calls == [["p-1", "p-2"]]
    assert (order.customer_id, order.email, order.idempotency_key) == (
        "cus-1",
        "ada@example.com",
        "key-1",
    )
    assert order.fingerprint == place.fingerprint()
    assert order.id.startswith("ord-")
    assert order.payment_id == "pay-1"
    assert await world.store.get(order.id) == order


async def test_an_unknown_product_stores_nothing(world: World) -> None:
    with pytest.raises(ProductNotFound, match=r"lines\[1\]\.product_id"):
        await world.orders.place_order(request(lines=[Line("p-1", 1), Line("p-404", 1)]))
    assert await world.store.by_key("key-1") is None
    assert world.inventory.calls == []


async def test_products_in_two_currencies_are_not_sellable(world: World) -> None:
    with pytest.raises(NotSellable, match="USD"):
        await world.orders.place_order(request(lines=[Line("p-1", 1), Line("p-usd", 1)]))
    assert await world.store.by_key("key-1") is None
    assert world.inventory.calls == []
    assert world.payments.calls == []


async def test_a_retry_returns_the_same_order_without_a_second_saga(world: World) -> None:
    first = await world.orders.place_order(request())
    again = await world.orders.place_order(request())
    reordered = await world.orders.place_order(request(lines=[Line("p-2", 1), Line("p-1", 2)]))
    assert again == first
    assert reordered == first
    assert world.inventory.calls == ["reserve", "commit"]
    assert world.payments.count("charge") == 1
    assert world.catalog.calls == [["p-1", "p-2"]]  # the retries found the order by key


async def test_a_key_reused_for_another_request_is_refused(world: World) -> None:
    first = await world.orders.place_order(request())
    for other in (
        request(lines=[Line("p-1", 3), Line("p-2", 1)]),
        request(email="grace@example.com"),
        request(customer="cus-2"),
    ):
        with pytest.raises(KeyReused, match="key-1"):
            await world.orders.place_order(other)
    assert world.inventory.calls.count("reserve") == 1
    assert await world.store.by_key("key-1") == first


async def test_concurrent_calls_with_one_key_make_one_order(world: World) -> None:
    results = await asyncio.gather(*(world.orders.place_order(request()) for _ in range(20)))
    assert {order.id for order in results} == {results[0].id}
    assert all(order.status is Status.CONFIRMED for order in results)
    assert world.inventory.calls.count("reserve") == 1
    assert world.payments.count("charge") == 1
    assert len(await world.store.by_customer("cus-1", 0, 100)) == 1


async def test_a_declined_order_is_returned_cancelled(world: World) -> None:
    world.payments.outcome = PaymentOutcome("pay-2", charged=False, decline_reason="card_declined")
    order = await world.orders.place_order(request())
    assert order.status is Status.CANCELLED
    assert "card_declined" in order.cancel_reason
    assert order.unreachable == ""
    assert await world.orders.place_order(request()) == order


async def test_an_order_cancelled_for_silence_is_unavailable_every_time(build: Build) -> None:
    world = await build(retry_budget_s=0)
    world.inventory.down.add("reserve")
    with pytest.raises(Unreachable) as caught:
        await world.orders.place_order(request())
    assert caught.value.service == "inventory"
    assert "cancelled" in str(caught.value)

    order = await world.store.by_key("key-1")
    assert order is not None
    assert order.status is Status.CANCELLED
    assert order.unreachable == "inventory"
    attempts = len(world.inventory.calls)

    world.inventory.down.clear()  # back, but the order is over: a retry says so again
    with pytest.raises(Unreachable) as again:
        await world.orders.place_order(request())
    assert again.value.service == "inventory"
    assert len(world.inventory.calls) == attempts
    assert world.payments.calls == []


async def test_a_paused_saga_is_unavailable_then_resumed(build: Build) -> None:
    world = await build(retry_budget_s=0)
    world.inventory.down.add("commit")
    with pytest.raises(Unreachable, match="pending") as caught:
        await world.orders.place_order(request())
    assert caught.value.service == "inventory"
    order = await world.store.by_key("key-1")
    assert order is not None
    assert order.step is Step.CHARGED

    world.inventory.down.clear()
    assert await world.orders.resume_in_flight() == 1
    assert (await settled(world.store, order.id)).status is Status.CONFIRMED
    assert (await world.orders.place_order(request())).status is Status.CONFIRMED
    assert world.payments.count("charge") == 1
    assert world.payments.count("resolve_charge") == 0  # CHARGED needs no card


async def test_list_orders_pages_to_the_end(world: World) -> None:
    for minute in range(7):
        at = NOW + timedelta(minutes=minute)
        await world.store.insert(stored_order(f"ord-{minute}", Step.CONFIRMED, at=at))
    await world.store.insert(stored_order("ord-x", Step.CONFIRMED, customer="cus-2"))

    pages: list[list[str]] = []
    token = ""
    while True:
        page = await world.orders.list_orders("cus-1", 3, token)
        pages.append([order.id for order in page.orders])
        token = page.next_page_token
        if not token:
            break
        assert len(pages) < 10
    assert pages == [["ord-6", "ord-5", "ord-4"], ["ord-3", "ord-2", "ord-1"], ["ord-0"]]


async def test_a_full_last_page_has_no_next_token(world: World) -> None:
    for minute in range(4):
        at = NOW + timedelta(minutes=minute)
        await world.store.insert(stored_order(f"ord-{minute}", Step.PLACED, at=at))
    first = await world.orders.list_orders("cus-1", 2, "")
    second = await world.orders.list_orders("cus-1", 2, first.next_page_token)
    assert [o.id for o in second.orders] == ["ord-1", "ord-0"]
    assert second.next_page_token == ""
    assert (await world.orders.list_orders("cus-9", 0, "")).orders == []


async def test_a_page_token_is_bound_to_its_customer(world: World) -> None:
    for minute in range(3):
        at = NOW + timedelta(minutes=minute)
        await world.store.insert(stored_order(f"ord-{minute}", Step.PLACED, at=at))
        await world.store.insert(stored_order(f"ord-b{minute}", Step.PLACED, "cus-2", at))
    token = (await world.orders.list_orders("cus-1", 1, "")).next_page_token
    assert token
    with pytest.raises(InvalidField) as caught:
        await world.orders.list_orders("cus-2", 1, token)
    assert caught.value.field == "page_token"
    with pytest.raises(InvalidField) as forged:
        await world.orders.list_orders("cus-1", 1, token[:-2] + "xx")
    assert forged.value.field == "page_token"
    with pytest.raises(InvalidField) as foreign:  # another process's key
        await world.orders.list_orders("cus-1", 1, PageTokens().issue(1, "customer:cus-1"))
    assert foreign.value.field == "page_token"


async def test_page_size_bounds(world: World) -> None:
    for index in range(DEFAULT_PAGE_SIZE + 1):
        at = NOW + timedelta(seconds=index)
        await world.store.insert(stored_order(f"ord-{index:03d}", Step.PLACED, at=at))
    default = await world.orders.list_orders("cus-1", 0, "")
    assert len(default.orders) == DEFAULT_PAGE_SIZE
    assert default.next_page_token
    everything = await world.orders.list_orders("cus-1", MAX_PAGE_SIZE, "")
    assert len(everything.orders) == DEFAULT_PAGE_SIZE + 1
    assert everything.next_page_token == ""
    for size in (-1, MAX_PAGE_SIZE + 1):
        with pytest.raises(InvalidField) as caught:
            await world.orders.list_orders("cus-1", size, "")
        assert caught.value.field == "page_size"
    with pytest.raises(InvalidArgument) as empty:
        await world.orders.list_orders("", 10, "")
    assert empty.value.field == "customer_id"


async def test_get_order(world: World) -> None:
    placed = await world.orders.place_order(request())
    assert await world.orders.get_order(placed.id) == placed
    with pytest.raises(OrderNotFound, match="ord-404"):
        await world.orders.get_order("ord-404")
    with pytest.raises(InvalidArgument) as caught:
        await world.orders.get_order("")
    assert caught.value.field == "id"


# --- a caller acting for one customer (the gateway's subject) -------------------


async def test_without_a_subject_any_customer_may_be_named(world: World) -> None:
    placed = await world.orders.place_order(request(customer="cus-b"), subject=None)
    assert await world.orders.get_order(placed.id, subject=None) == placed
    page = await world.orders.list_orders("cus-b", 10, "", subject=None)
    assert page.orders == [placed]


async def test_a_subject_may_act_for_its_own_customer(world: World) -> None:
    placed = await world.orders.place_order(request(customer="cus-a"), subject="cus-a")
    assert placed.status is Status.CONFIRMED
    assert await world.orders.get_order(placed.id, subject="cus-a") == placed
    assert (await world.orders.list_orders("cus-a", 10, "", subject="cus-a")).orders == [placed]


async def test_a_subject_may_not_place_an_order_for_another_customer(world: World) -> None:
    with pytest.raises(NotYourCustomer) as caught:
        await world.orders.place_order(request(customer="cus-b"), subject="cus-a")
    assert caught.value.field == "customer_id"
    assert str(caught.value) == "customer_id: the caller acts for 'cus-a', not 'cus-b'"
    assert await world.store.by_key("key-1") is None
    assert world.catalog.calls == []  # refused before anything was asked of anyone
    assert world.inventory.calls == []


async def test_a_subject_may_not_replay_another_customers_order(world: World) -> None:
    placed = await world.orders.place_order(request(customer="cus-b"))
    with pytest.raises(NotYourCustomer):  # the same request, key included, from cus-a
        await world.orders.place_order(request(customer="cus-b"), subject="cus-a")
    assert world.payments.count("charge") == 1
    assert await world.store.by_key("key-1") == placed


async def test_a_subject_may_not_list_another_customers_orders(world: World) -> None:
    for minute in range(2):
        at = NOW + timedelta(minutes=minute)
        await world.store.insert(stored_order(f"ord-b{minute}", Step.CONFIRMED, "cus-b", at))
    token = (await world.orders.list_orders("cus-b", 1, "")).next_page_token
    assert token
    for page_token in ("", token):  # a genuine token of cus-b's does not help
        with pytest.raises(NotYourCustomer) as caught:
            await world.orders.list_orders("cus-b", 1, page_token, subject="cus-a")
    assert caught.value.field == "customer_id"
    assert str(caught.value) == "customer_id: the caller acts for 'cus-a', not 'cus-b'"


async def test_a_subject_may_not_get_another_customers_order(world: World) -> None:
    await world.store.insert(stored_order("ord-b", Step.CONFIRMED, customer="cus-b-secret"))
    with pytest.raises(NotYourCustomer) as caught:
        await world.orders.get_order("ord-b", subject="cus-a")
    assert caught.value.field == "id"
    assert str(caught.value).startswith("id: the caller acts for 'cus-a'")
    assert "cus-b-secret" not in str(caught.value)  # the owner is not revealed


async def test_invalid_and_unknown_still_win_over_a_foreign_subject(world: World) -> None:
    """A malformed request is INVALID_ARGUMENT and an unknown order NOT_FOUND,
    whoever the caller acts for, as without a subject."""
    with pytest.raises(InvalidArgument) as empty:
        await world.orders.list_orders("", 10, "", subject="cus-a")
    assert empty.value.field == "customer_id"
    with pytest.raises(InvalidField) as size:
        await world.orders.list_orders("cus-b", -1, "", subject="cus-a")
    assert size.value.field == "page_size"
    with pytest.raises(InvalidField) as token:
        await world.orders.list_orders("cus-b", 10, "%%%", subject="cus-a")
    assert token.value.field == "page_token"
    with pytest.raises(InvalidArgument) as no_id:
        await world.orders.get_order("", subject="cus-a")
    assert no_id.value.field == "id"
    with pytest.raises(OrderNotFound):
        await world.orders.get_order("ord-404", subject="cus-a")


def test_acting_for_another_customer_is_permission_denied() -> None:
    error = NotYourCustomer("customer_id", "the caller acts for 'cus-a', not 'cus-b'")
    assert isinstance(error, ActsForAnotherCustomer)
    assert status_code(error, STATUSES) == grpc.StatusCode.PERMISSION_DENIED


async def test_resume_drives_unfinished_orders_without_a_card(world: World) -> None:
    world.payments.resolved = PaymentOutcome("pay-5", charged=True)
    await world.store.insert(stored_order("ord-placed", Step.PLACED))
    await world.store.insert(stored_order("ord-reserved", Step.RESERVED))
    await world.store.insert(stored_order("ord-compensating", Step.COMPENSATING))
    await world.store.insert(stored_order("ord-done", Step.CONFIRMED))

    assert await world.orders.resume_in_flight() == 3
    assert (await settled(world.store, "ord-placed")).status is Status.CONFIRMED
    assert (await settled(world.store, "ord-reserved")).status is Status.CONFIRMED
    assert (await settled(world.store, "ord-compensating")).status is Status.CANCELLED
    assert world.payments.count("charge") == 0
    assert sorted(key for method, key in world.payments.calls if method == "resolve_charge") == [
        "ord-placed/charge",
        "ord-reserved/charge",
    ]
    assert sorted(world.inventory.calls) == ["commit", "commit", "release", "reserve"]
    assert await world.orders.resume_in_flight() == 0


async def test_resume_leaves_a_running_saga_alone(world: World) -> None:
    gate = Gate("reserve")
    world.inventory.on_call = gate
    placing = asyncio.create_task(world.orders.place_order(request()))
    await gate.reached()

    assert await world.orders.resume_in_flight() == 0
    gate.open.set()
    async with asyncio.timeout(5):
        order = await placing
    assert order.status is Status.CONFIRMED
    assert world.inventory.calls.count("reserve") == 1
    assert world.payments.calls == [("charge", f"{order.id}/charge")]


async def test_resume_starts_one_task_per_order(world: World) -> None:
    gate = Gate("reserve")
    world.inventory.on_call = gate
    world.payments.resolved = PaymentOutcome("pay-5", charged=True)
    await world.store.insert(stored_order("ord-1", Step.PLACED))
    assert await world.orders.resume_in_flight() == 1
    await gate.reached()
    assert await world.orders.resume_in_flight() == 0
    gate.open.set()
    assert (await settled(world.store, "ord-1")).status is Status.CONFIRMED
    assert world.inventory.calls.count("reserve") == 1


async def test_a_resume_pass_during_the_insert_leaves_the_order_to_its_caller(
    world: World,
) -> None:
    # A background resume pass can read the new order between the insert's
    # commit and PlaceOrder starting its saga. It must not drive that order
    # itself: without the card it could only cancel it as "interrupted".
    resumed: list[int] = []
    store = world.store
    insert = store.insert

    async def insert_then_resume(order: Order) -> Order:
        stored = await insert(order)
        resumed.append(await world.orders.resume_in_flight())
        return stored

    store.insert = insert_then_resume  # type: ignore[method-assign]
    order = await world.orders.place_order(request())
    assert order.status is Status.CONFIRMED, order.cancel_reason
    assert resumed == [0]
    assert world.payments.count("charge") == 1
    assert world.payments.count("resolve_charge") == 0


async def test_stop_cancels_running_sagas_which_resume_later(build: Build) -> None:
    world = await build()
    gate = Gate("commit")
    world.inventory.on_call = gate
    placing = asyncio.create_task(world.orders.place_order(request()))
    await gate.reached()

    try:
        async with asyncio.timeout(5):
            await world.orders.stop()
            with pytest.raises(asyncio.CancelledError):
                await placing
    finally:
        gate.open.set()  # lets the saga end if stop() failed to cancel it
    [order] = await world.store.in_flight()
    assert order.step is Step.CHARGED  # the last persisted step

    later = await build(store=world.store)  # the next process, same database
    assert await later.orders.resume_in_flight() == 1
    done = await settled(world.store, order.id)
    assert done.status is Status.CONFIRMED
    assert done.payment_id == "pay-1"
    assert later.inventory.calls == ["commit"]
    assert later.payments.calls == []


async def test_a_refused_commit_on_resume_refunds(world: World) -> None:
    await world.store.insert(
        replace(stored_order("ord-1", Step.CHARGED), payment_id="pay-1", charged=True)
    )
    world.inventory.errors["commit"] = [Refused("expired")]
    assert await world.orders.resume_in_flight() == 1
    order = await settled(world.store, "ord-1")
    assert order.status is Status.CANCELLED
    assert ("refund", "ord-1/refund") in world.payments.calls


async def test_a_caller_that_hangs_up_does_not_stop_the_saga(world: World) -> None:
    gate = Gate("commit")
    world.inventory.on_call = gate
    placing = asyncio.create_task(world.orders.place_order(request()))
    await gate.reached()
    placing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await placing
    gate.open.set()
    [order] = await world.store.by_customer("cus-1", 0, 10)
    assert (await settled(world.store, order.id)).status is Status.CONFIRMED
    assert world.inventory.calls == ["reserve", "commit"]
