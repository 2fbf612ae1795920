"""OrdersService over real gRPC against the real `python -m orders`.

One stack serves the module: NATS, catalog, inventory (the Go binary),
payments (Node) and orders, each a real process (`make build` first). The
tests share its stock, so each one buys its own products and compares stock
levels before and after, never against the seed. Money and stock are
checked where they live: inventory's GetStock, payments' GetPayment and
payments' SQLite file; events on the JetStream stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import nats
import pytest
from nats.js.errors import NotFoundError

from localmode.processes import Stack, free_port, start_all
from localmode.topology import LocalService, Topology
from mesh.events import ORDER_CANCELLED, ORDER_CONFIRMED, ORDERS_STREAM
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2 as pb
from shop.orders.v1 import orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.contract.grpc_checks import (
    NO_TRACING,
    assert_invalid_field,
    assert_serving,
    assert_sigterm_drains,
)
from tests.traffic_files import NO_BREAKER, traffic_file

if TYPE_CHECKING:  # the async stub classes exist only in the type stubs
    from shop.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub
    from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub
    from shop.orders.v1.orders_pb2_grpc import OrdersServiceAsyncStub
    from shop.payments.v1.payments_pb2_grpc import PaymentsServiceAsyncStub

StartStack = Callable[..., dict[str, LocalService]]
SERVICE = "shop.orders.v1.OrdersService"
STACK = ["nats", "catalog", "inventory", "payments", "orders"]
ORDERS_ENV = {
    # Payments' 4000000000000119 answers UNAVAILABLE every time: one second
    # of retries, then the saga compensates and PlaceOrder is UNAVAILABLE.
    "ORDERS_STEP_RETRY_SECONDS": "1",
    # The resumer scans for unfinished sagas all the time, as under load: it
    # must never take a saga from the PlaceOrder that drives it.
    "ORDERS_RESUME_INTERVAL_SECONDS": "0.1",
}
TIMEOUT_S = 15.0
WAIT_S = 15.0
CONFIRMED, CANCELLED = pb.ORDER_STATUS_CONFIRMED, pb.ORDER_STATUS_CANCELLED
NEXT_YEAR = datetime.now(UTC).year + 1
# The payments simulator's test cards (README).
VISA_OK = "4242424242424242"
DECLINED_CARD = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"
PROCESSOR_DOWN = "4000000000000119"
SCARCE = "prod-espresso-machine"  # seeded with 2 units


@dataclass(frozen=True)
class Mesh:
    services: dict[str, LocalService]

    def target(self, name: str) -> str:
        target = self.services[name].grpc_target
        assert target is not None
        return target

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.services['nats'].ports[4222]}"

    @property
    def payments_db(self) -> Path:
        return Path(self.services["payments"].environment["PAYMENTS_DB_PATH"])


@dataclass(frozen=True)
class Shop:
    mesh: Mesh
    orders: OrdersServiceAsyncStub
    inventory: InventoryServiceAsyncStub
    payments: PaymentsServiceAsyncStub
    catalog: CatalogServiceAsyncStub


@pytest.fixture(scope="module")
def mesh(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The whole checkout path on free ports, started once for the module."""
    ports = {key: free_port() for key in topology.default_ports()}
    run_dir = tmp_path_factory.mktemp("orders-mesh")
    services = []
    for name in STACK:
        service = topology.resolve(name, ports, run_dir)
        extra = {**NO_TRACING, **(ORDERS_ENV if name == "orders" else {})}
        if name == "orders":
            # Each test checks one answer of the contract: a breaker opened by
            # one test's outage (the processor-down card) would refuse the
            # next test's charge. tests/resilience tests the breakers.
            traffic = traffic_file(run_dir / "traffic.yaml", breaker=NO_BREAKER)
            extra["MESH_TRAFFIC_FILE"] = str(traffic)
        services.append(dataclasses.replace(service, environment={**service.environment, **extra}))
    stack = Stack(run_dir)
    start_all(stack, services)
    try:
        yield Mesh({service.name: service for service in services})
    finally:
        stack.stop()


@pytest.fixture
async def shop(mesh: Mesh) -> AsyncIterator[Shop]:
    async with (
        grpc.aio.insecure_channel(mesh.target("orders")) as orders,
        grpc.aio.insecure_channel(mesh.target("inventory")) as inventory,
        grpc.aio.insecure_channel(mesh.target("payments")) as payments,
        grpc.aio.insecure_channel(mesh.target("catalog")) as catalog,
    ):
        yield Shop(
            mesh,
            orders_pb2_grpc.OrdersServiceStub(orders),
            inventory_pb2_grpc.InventoryServiceStub(inventory),
            payments_pb2_grpc.PaymentsServiceStub(payments),
            catalog_pb2_grpc.CatalogServiceStub(catalog),
        )


# --- requests and observations ---------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def card(number: str = VISA_OK, **overrides: Any) -> pb.PaymentCard:
    fields: dict[str, Any] = {
        "number": number,
        "expiry_month": 12,
        "expiry_year": NEXT_YEAR,
        "cvc": "123",
        "holder_name": "Ada Lovelace",
    }
    return pb.PaymentCard(**(fields | overrides))


def place_request(
    lines: Sequence[tuple[str, int]],
    number: str = VISA_OK,
    key: str | None = None,
    customer: str = "cus-ada",
    email: str = "ada@example.com",
    **card_fields: Any,
) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        idempotency_key=key or new_id("key"),
        customer_id=customer,
        email=email,
        lines=[pb.OrderLine(product_id=p, quantity=q) for p, q in lines],
        card=card(number, **card_fields),
    )


async def place(shop: Shop, request: pb.PlaceOrderRequest) -> pb.Order:
    return (await shop.orders.PlaceOrder(request, timeout=TIMEOUT_S)).order


async def error_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def stock(shop: Shop, product_id: str) -> tuple[int, int]:
    """(available, reserved) of one product, from inventory."""
    reply = await shop.inventory.GetStock(
        inventory_pb2.GetStockRequest(product_ids=[product_id]), timeout=TIMEOUT_S
    )
    level = reply.stock_levels[0]
    return level.available, level.reserved


async def list_orders_of(stub: OrdersServiceAsyncStub, customer: str) -> list[pb.Order]:
    reply = await stub.ListOrders(
        pb.ListOrdersRequest(customer_id=customer, page_size=100), timeout=TIMEOUT_S
    )
    assert reply.next_page_token == ""
    return list(reply.orders)


async def list_orders(shop: Shop, customer: str) -> list[pb.Order]:
    return await list_orders_of(shop.orders, customer)


def payments_of_order(shop: Shop, order_id: str) -> int:
    """How many payments payments stored for `order_id`, read from its file."""
    with sqlite3.connect(f"{shop.mesh.payments_db.as_uri()}?mode=ro", uri=True) as connection:
        query = "SELECT count(*) FROM payments WHERE order_id = ?"
        count: int = connection.execute(query, (order_id,)).fetchone()[0]
    return count


Event = events_pb2.OrderConfirmed | events_pb2.OrderCancelled


async def events_of(shop: Shop, order_id: str) -> list[Event]:
    """The events of `order_id` on the stream, once at least one is there (bounded wait)."""
    client = await nats.connect(shop.mesh.nats_url, connect_timeout=5)
    try:
        js = client.jetstream()
        deadline = time.monotonic() + WAIT_S
        while True:
            found: list[Event] = []
            try:
                state = (await js.stream_info(ORDERS_STREAM.name)).state
            except NotFoundError:  # nothing published yet
                state = None
            for seq in range(state.first_seq, state.last_seq + 1) if state else ():
                message = await js.get_msg(ORDERS_STREAM.name, seq)
                event: Event
                if message.subject == ORDER_CONFIRMED:
                    event = events_pb2.OrderConfirmed.FromString(message.data or b"")
                else:
                    assert message.subject == ORDER_CANCELLED, message.subject
                    event = events_pb2.OrderCancelled.FromString(message.data or b"")
                if event.order_id == order_id:
                    found.append(event)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no event for {order_id} within {WAIT_S}s")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


# --- PlaceOrder: outcomes ------------------------------------------------------


async def test_place_order_confirms_at_catalog_prices(shop: Shop) -> None:
    lines = [("prod-chemex", 2), ("prod-thermometer", 1)]
    prices = {}
    for product_id, _ in lines:
        reply = await shop.catalog.GetProduct(catalog_pb2.GetProductRequest(id=product_id))
        prices[product_id] = reply.product.price
    before = {product_id: await stock(shop, product_id) for product_id, _ in lines}

    order = await place(shop, place_request(lines, customer="cus-confirmed"))

    assert order.status == CONFIRMED, order.cancel_reason
    assert order.id
    assert (order.customer_id, order.email) == ("cus-confirmed", "ada@example.com")
    assert [(i.product_id, i.quantity, i.unit_price) for i in order.items] == [
        (product_id, quantity, prices[product_id]) for product_id, quantity in lines
    ]
    assert order.total.currency_code == "EUR"
    assert order.total.amount_minor == sum(prices[p].amount_minor * q for p, q in lines)
    assert order.cancel_reason == ""
    assert order.payment_id
    created = order.create_time.ToDatetime(UTC)
    assert abs(created - datetime.now(UTC)).total_seconds() < 300
    assert order.update_time.ToDatetime(UTC) >= created

    # The money: one charge of the total, for this order.
    payment = (
        await shop.payments.GetPayment(payments_pb2.GetPaymentRequest(id=order.payment_id))
    ).payment
    assert payment.status == payments_pb2.PAYMENT_STATUS_CHARGED
    assert payment.order_id == order.id
    assert payment.amount == order.total
    assert payment.card_last4 == "4242"
    assert payments_of_order(shop, order.id) == 1
    # The stock: committed, so it left `available` and is not held in `reserved`.
    for product_id, quantity in lines:
        available, reserved = before[product_id]
        assert await stock(shop, product_id) == (available - quantity, reserved)

    got = await shop.orders.GetOrder(pb.GetOrderRequest(id=order.id), timeout=TIMEOUT_S)
    assert got.order == order
    [event] = await events_of(shop, order.id)
    assert isinstance(event, events_pb2.OrderConfirmed)
    assert (event.customer_id, event.email, event.payment_id) == (
        "cus-confirmed",
        "ada@example.com",
        order.payment_id,
    )
    assert event.total == order.total
    assert event.event_id


@pytest.mark.parametrize(
    ("number", "reason"),
    [(DECLINED_CARD, "card_declined"), (INSUFFICIENT_FUNDS, "insufficient_funds")],
)
async def test_a_declined_card_cancels_and_gives_the_stock_back(
    shop: Shop, number: str, reason: str
) -> None:
    product_id = "prod-french-press"
    before = await stock(shop, product_id)

    order = await place(shop, place_request([(product_id, 2)], number, customer="cus-declined"))

    assert order.status == CANCELLED
    assert "declined" in order.cancel_reason
    assert reason in order.cancel_reason
    assert await stock(shop, product_id) == before  # reserved, then released
    # The declined payment is on record, and no money moved.
    payment = (
        await shop.payments.GetPayment(payments_pb2.GetPaymentRequest(id=order.payment_id))
    ).payment
    assert (payment.status, payment.decline_reason) == (
        payments_pb2.PAYMENT_STATUS_DECLINED,
        reason,
    )
    assert payment.order_id == order.id
    assert payments_of_order(shop, order.id) == 1
    [event] = await events_of(shop, order.id)
    assert isinstance(event, events_pb2.OrderCancelled)
    assert event.reason == order.cancel_reason


async def test_too_little_stock_cancels_without_charging(shop: Shop) -> None:
    assert await stock(shop, SCARCE) == (2, 0)  # no other test touches it

    order = await place(shop, place_request([("prod-knock-box", 1), (SCARCE, 3)]))

    assert order.status == CANCELLED
    assert "out of stock" in order.cancel_reason
    assert SCARCE in order.cancel_reason
    assert order.payment_id == ""
    assert payments_of_order(shop, order.id) == 0
    assert await stock(shop, SCARCE) == (2, 0)
    [event] = await events_of(shop, order.id)
    assert isinstance(event, events_pb2.OrderCancelled)


async def test_payments_unavailable_is_unavailable_and_compensated(shop: Shop) -> None:
    product_id = "prod-moka-pot"
    before = await stock(shop, product_id)
    request = place_request([(product_id, 1)], PROCESSOR_DOWN, customer=new_id("cus-outage"))

    error = await error_of(shop.orders.PlaceOrder(request, timeout=TIMEOUT_S))

    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "payments" in (error.details() or "")
    [order] = await list_orders(shop, request.customer_id)
    assert order.id in (error.details() or "")
    assert order.status == CANCELLED
    assert "payments did not answer" in order.cancel_reason
    assert order.payment_id == ""
    got = await shop.orders.GetOrder(pb.GetOrderRequest(id=order.id), timeout=TIMEOUT_S)
    assert got.order == order
    assert await stock(shop, product_id) == before  # released
    assert payments_of_order(shop, order.id) == 0
    [event] = await events_of(shop, order.id)
    assert isinstance(event, events_pb2.OrderCancelled)
    # A retry with the key replays the outcome: no second order, no second saga.
    again = await error_of(shop.orders.PlaceOrder(request, timeout=TIMEOUT_S))
    assert again.code() == grpc.StatusCode.UNAVAILABLE
    assert await list_orders(shop, request.customer_id) == [order]


# --- PlaceOrder: idempotency ---------------------------------------------------


async def test_same_key_same_request_returns_the_first_order(shop: Shop) -> None:
    product_id = "prod-tamper"
    before = await stock(shop, product_id)
    customer = new_id("cus-retry")
    request = place_request([(product_id, 2)], customer=customer)
    first = await place(shop, request)
    assert first.status == CONFIRMED, first.cancel_reason
    # The CVC and the holder's name are not part of what makes "the same request".
    retried = place_request(
        [(product_id, 2)],
        key=request.idempotency_key,
        customer=customer,
        cvc="999",
        holder_name="A. Lovelace",
    )
    for again in (request, retried):
        assert await place(shop, again) == first

    assert await stock(shop, product_id) == (before[0] - 2, before[1])  # moved once
    assert await list_orders(shop, request.customer_id) == [first]
    assert payments_of_order(shop, first.id) == 1


DARJEELING = "prod-tea-darjeeling"


@pytest.mark.parametrize(
    "change",
    [
        {"lines": [(DARJEELING, 2)]},
        {"lines": [("prod-milk-jug", 1)]},
        {"lines": [(DARJEELING, 1), ("prod-milk-jug", 1)]},
        {"customer": "cus-someone-else"},
        {"email": "someone@example.com"},
        {"number": "5555555555554444"},
        {"expiry_year": NEXT_YEAR + 1},
    ],
    ids=["quantity", "product", "extra-line", "customer", "email", "card", "expiry"],
)
async def test_same_key_different_request_is_failed_precondition(
    shop: Shop, change: dict[str, Any]
) -> None:
    request = place_request([(DARJEELING, 1)])
    first = await place(shop, request)
    before = await stock(shop, DARJEELING)
    different = place_request(
        **({"lines": [(DARJEELING, 1)], "key": request.idempotency_key} | change)
    )

    error = await error_of(shop.orders.PlaceOrder(different, timeout=TIMEOUT_S))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
    assert (error.details() or "").startswith("idempotency_key:"), error.details()
    assert await stock(shop, DARJEELING) == before
    got = await shop.orders.GetOrder(pb.GetOrderRequest(id=first.id), timeout=TIMEOUT_S)
    assert got.order == first
    assert await place(shop, request) == first  # the original still replays


async def test_concurrent_retries_of_one_key_place_one_order(shop: Shop) -> None:
    product_id = "prod-kettle-gooseneck"
    before = await stock(shop, product_id)
    request = place_request([(product_id, 3)], customer=new_id("cus-race"))

    orders = await asyncio.gather(*(place(shop, request) for _ in range(20)))

    assert {order.id for order in orders} == {orders[0].id}
    assert all(order == orders[0] for order in orders)
    order = orders[0]
    assert order.status == CONFIRMED, order.cancel_reason
    assert await stock(shop, product_id) == (before[0] - 3, before[1])  # reserved once
    payment = (
        await shop.payments.GetPayment(payments_pb2.GetPaymentRequest(id=order.payment_id))
    ).payment
    assert payment.status == payments_pb2.PAYMENT_STATUS_CHARGED
    assert payment.amount == order.total
    assert payments_of_order(shop, order.id) == 1  # charged once
    assert await list_orders(shop, request.customer_id) == [order]
    assert len(await events_of(shop, order.id)) == 1


async def test_concurrent_orders_all_confirm_while_the_resumer_scans(shop: Shop) -> None:
    """A new order is unfinished from the moment it is stored; the resumer,
    scanning every 0.1 s here, must leave it to its PlaceOrder (which has the
    card) and not resume it without the card, which would cancel it."""
    product_id = "prod-aeropress"
    before = await stock(shop, product_id)
    requests = [place_request([(product_id, 1)], customer=new_id("cus-many")) for _ in range(60)]

    orders = await asyncio.gather(*(place(shop, request) for request in requests))

    assert [order.cancel_reason for order in orders if order.status != CONFIRMED] == []
    assert len({order.id for order in orders}) == 60
    assert await stock(shop, product_id) == (before[0] - 60, before[1])


# --- PlaceOrder: rejected requests ---------------------------------------------


def _lines(*lines: tuple[str, int]) -> list[pb.OrderLine]:
    return [pb.OrderLine(product_id=p, quantity=q) for p, q in lines]


def _invalid(**fields: Any) -> pb.PlaceOrderRequest:
    request: dict[str, Any] = {
        "idempotency_key": "key-invalid",
        "customer_id": "cus-invalid",
        "email": "ada@example.com",
        "lines": _lines(("prod-chemex", 1)),
        "card": card(),
    }
    return pb.PlaceOrderRequest(**(request | fields))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_invalid(idempotency_key=""), "idempotency_key"),
        (_invalid(idempotency_key="has spaces"), "idempotency_key"),
        (_invalid(customer_id=""), "customer_id"),
        (_invalid(email=""), "email"),
        (_invalid(email="not-an-email"), "email"),
        (_invalid(lines=[]), "lines"),
        (_invalid(lines=_lines(("", 1))), "lines[0].product_id"),
        (
            _invalid(lines=_lines(("prod-chemex", 1), ("prod-chemex", 2))),
            "lines[1].product_id",
        ),
        (_invalid(lines=_lines(("prod-chemex", 0))), "lines[0].quantity"),
        (_invalid(lines=_lines(("prod-chemex", 1), ("prod-aeropress", -1))), "lines[1].quantity"),
        (_invalid(card=None), "card"),
        (_invalid(card=card("")), "card.number"),
        (_invalid(card=card("4242424242424241")), "card.number"),  # Luhn
        (_invalid(card=card("4242 4242 4242 4242")), "card.number"),
        (_invalid(card=card(cvc="12")), "card.cvc"),
        (_invalid(card=card(expiry_month=13)), "card.expiry_month"),
        (_invalid(card=card(expiry_month=0)), "card.expiry_month"),
        (_invalid(card=card(expiry_year=2020)), "card.expiry_year"),
    ],
)
async def test_invalid_argument_names_the_field_and_stores_nothing(
    shop: Shop, request_: pb.PlaceOrderRequest, field: str
) -> None:
    assert_invalid_field(await error_of(shop.orders.PlaceOrder(request_, timeout=TIMEOUT_S)), field)
    assert await list_orders(shop, "cus-invalid") == []


async def test_unknown_product_is_not_found_and_stores_nothing(shop: Shop) -> None:
    before = await stock(shop, "prod-scale-timer")
    request = place_request(
        [("prod-scale-timer", 1), ("prod-unicorn", 1)], customer=new_id("cus-unknown")
    )

    error = await error_of(shop.orders.PlaceOrder(request, timeout=TIMEOUT_S))

    assert error.code() == grpc.StatusCode.NOT_FOUND, error
    assert "prod-unicorn" in (error.details() or "")
    assert "lines[1].product_id" in (error.details() or "")
    assert await list_orders(shop, request.customer_id) == []
    assert await stock(shop, "prod-scale-timer") == before
    # The key was not used up: the corrected request goes through with it.
    del request.lines[1]
    order = await place(shop, request)
    assert order.status == CONFIRMED, order.cancel_reason


async def test_an_order_still_compensating_is_pending_without_a_cancel_reason(
    start_stack: StartStack,
) -> None:
    """`cancel_reason` is empty unless the status is CANCELLED: an order held
    (by the test pause) once its compensation began is PENDING, reason unset."""
    env = {name: NO_TRACING for name in ("catalog", "inventory", "payments")}
    env["orders"] = {**NO_TRACING, "ORDERS_TEST_PAUSE_AFTER_STEP": "compensating"}
    service = start_stack(["catalog", "inventory", "payments", "orders"], env=env)["orders"]
    assert service.grpc_target is not None
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        stub = orders_pb2_grpc.OrdersServiceStub(channel)
        request = place_request([("prod-chemex", 1)], DECLINED_CARD, customer="cus-held")
        call = asyncio.ensure_future(stub.PlaceOrder(request, timeout=TIMEOUT_S))
        try:
            deadline = time.monotonic() + WAIT_S
            # The declined payment is stored with the step that starts the compensation.
            while not (orders := await list_orders_of(stub, "cus-held")) or not (
                orders[0].payment_id
            ):
                assert time.monotonic() < deadline, "the order never reached compensating"
                await asyncio.sleep(0.05)
            [order] = orders
            assert not call.done()
            assert order.status == pb.ORDER_STATUS_PENDING
            assert order.cancel_reason == ""
        finally:
            call.cancel()


# --- GetOrder ------------------------------------------------------------------


async def test_get_order_invalid_and_unknown(shop: Shop) -> None:
    error = await error_of(shop.orders.GetOrder(pb.GetOrderRequest(), timeout=TIMEOUT_S))
    assert_invalid_field(error, "id")
    error = await error_of(
        shop.orders.GetOrder(pb.GetOrderRequest(id="ord-missing"), timeout=TIMEOUT_S)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND, error
    assert "ord-missing" in (error.details() or "")


# --- ListOrders ----------------------------------------------------------------


async def test_list_orders_pages_newest_first_until_exhausted(shop: Shop) -> None:
    customer = new_id("cus-pages")
    placed = [
        await place(shop, place_request([("prod-tea-sencha", 1)], customer=customer))
        for _ in range(5)
    ]
    await place(shop, place_request([("prod-tea-sencha", 1)], customer=new_id("cus-other")))
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(10):
        reply = await shop.orders.ListOrders(
            pb.ListOrdersRequest(customer_id=customer, page_size=2, page_token=token),
            timeout=TIMEOUT_S,
        )
        sizes.append(len(reply.orders))
        seen += [order.id for order in reply.orders]
        token = reply.next_page_token
        if not token:
            break
    assert sizes == [2, 2, 1]
    assert seen == [order.id for order in reversed(placed)]  # newest first, no repeat
    everything = await shop.orders.ListOrders(
        pb.ListOrdersRequest(customer_id=customer), timeout=TIMEOUT_S
    )  # page_size 0: the default (20)
    assert list(everything.orders) == list(reversed(placed))
    assert everything.next_page_token == ""


def _tamper(token: str) -> str:
    flipped = "A" if token[3] != "A" else "B"
    return token[:3] + flipped + token[4:]


async def test_list_orders_invalid_arguments_name_the_field(shop: Shop) -> None:
    customer = new_id("cus-tok")
    for _ in range(2):
        await place(shop, place_request([("prod-whisk-bamboo", 1)], customer=customer))
    first = await shop.orders.ListOrders(
        pb.ListOrdersRequest(customer_id=customer, page_size=1), timeout=TIMEOUT_S
    )
    token = first.next_page_token
    assert token
    cases = [
        (pb.ListOrdersRequest(customer_id=""), "customer_id"),
        (pb.ListOrdersRequest(customer_id=customer, page_size=-1), "page_size"),
        (pb.ListOrdersRequest(customer_id=customer, page_size=101), "page_size"),
        (pb.ListOrdersRequest(customer_id=customer, page_token="%%%"), "page_token"),
        (pb.ListOrdersRequest(customer_id=customer, page_token=_tamper(token)), "page_token"),
        (pb.ListOrdersRequest(customer_id="cus-eve", page_token=token), "page_token"),
    ]
    for request, field in cases:
        error = await error_of(shop.orders.ListOrders(request, timeout=TIMEOUT_S))
        assert_invalid_field(error, field)
    largest = await shop.orders.ListOrders(
        pb.ListOrdersRequest(customer_id=customer, page_size=100), timeout=TIMEOUT_S
    )
    assert len(largest.orders) == 2


# --- the caller's identity (the gateway's x-shop-subject) -----------------------


def acting_for(customer: str) -> tuple[tuple[str, str], ...]:
    """The metadata the gateway adds for a caller it authenticated as `customer`."""
    return (("x-shop-subject", customer),)


def assert_denied(error: grpc.aio.AioRpcError, field: str) -> None:
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert (error.details() or "").startswith(f"{field}: the caller acts for "), error.details()


async def test_a_subject_places_lists_and_gets_only_its_own_orders(shop: Shop) -> None:
    ada, bob = new_id("cus-ada"), new_id("cus-bob")
    product_id = "prod-mug-stoneware"
    before = await stock(shop, product_id)

    # For another customer: refused before anything is reserved, charged or stored.
    foreign = place_request([(product_id, 1)], customer=bob)
    error = await error_of(
        shop.orders.PlaceOrder(foreign, metadata=acting_for(ada), timeout=TIMEOUT_S)
    )
    assert_denied(error, "customer_id")
    assert error.details() == f"customer_id: the caller acts for {ada!r}, not {bob!r}"
    assert await list_orders(shop, bob) == []
    assert await stock(shop, product_id) == before

    # For its own customer: as without a subject.
    mine = await shop.orders.PlaceOrder(
        place_request([(product_id, 1)], customer=ada), metadata=acting_for(ada), timeout=TIMEOUT_S
    )
    order = mine.order
    assert order.status == CONFIRMED, order.cancel_reason
    listed = await shop.orders.ListOrders(
        pb.ListOrdersRequest(customer_id=ada), metadata=acting_for(ada), timeout=TIMEOUT_S
    )
    assert list(listed.orders) == [order]
    got = await shop.orders.GetOrder(
        pb.GetOrderRequest(id=order.id), metadata=acting_for(ada), timeout=TIMEOUT_S
    )
    assert got.order == order

    # Someone else's: ListOrders names the field, GetOrder does not name the owner.
    error = await error_of(
        shop.orders.ListOrders(
            pb.ListOrdersRequest(customer_id=ada), metadata=acting_for(bob), timeout=TIMEOUT_S
        )
    )
    assert_denied(error, "customer_id")
    assert error.details() == f"customer_id: the caller acts for {bob!r}, not {ada!r}"
    error = await error_of(
        shop.orders.GetOrder(
            pb.GetOrderRequest(id=order.id), metadata=acting_for(bob), timeout=TIMEOUT_S
        )
    )
    assert_denied(error, "id")
    assert ada not in (error.details() or "")


async def test_a_malformed_request_is_invalid_whoever_the_caller_acts_for(shop: Shop) -> None:
    cases: list[tuple[Any, str]] = [
        (
            shop.orders.PlaceOrder(
                _invalid(email=""), metadata=acting_for("cus-a"), timeout=TIMEOUT_S
            ),
            "email",
        ),
        (
            shop.orders.ListOrders(
                pb.ListOrdersRequest(), metadata=acting_for("cus-a"), timeout=TIMEOUT_S
            ),
            "customer_id",
        ),
        (
            shop.orders.ListOrders(
                pb.ListOrdersRequest(customer_id="cus-b", page_size=-1),
                metadata=acting_for("cus-a"),
                timeout=TIMEOUT_S,
            ),
            "page_size",
        ),
        (
            shop.orders.GetOrder(
                pb.GetOrderRequest(), metadata=acting_for("cus-a"), timeout=TIMEOUT_S
            ),
            "id",
        ),
    ]
    for call, field in cases:
        assert_invalid_field(await error_of(call), field)
    unknown = await error_of(
        shop.orders.GetOrder(
            pb.GetOrderRequest(id="ord-missing"), metadata=acting_for("cus-a"), timeout=TIMEOUT_S
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND, unknown


# --- the process ---------------------------------------------------------------


async def test_reports_serving(mesh: Mesh) -> None:
    await assert_serving(mesh.target("orders"), SERVICE)


async def test_serves_without_its_upstreams_and_says_unavailable(start_stack: StartStack) -> None:
    """Alone (no catalog, inventory, payments or NATS on their ports), orders
    starts and serves; PlaceOrder is UNAVAILABLE and stores no order."""
    service = start_stack(["orders"], env={"orders": NO_TRACING})["orders"]
    assert service.grpc_target is not None
    await assert_serving(service.grpc_target, SERVICE)
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        stub = orders_pb2_grpc.OrdersServiceStub(channel)
        request = place_request([("prod-chemex", 1)], customer="cus-alone")
        error = await error_of(stub.PlaceOrder(request, timeout=TIMEOUT_S))
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        assert "catalog" in (error.details() or "")
        reply = await stub.ListOrders(pb.ListOrdersRequest(customer_id="cus-alone"), timeout=5)
        assert list(reply.orders) == []


async def test_sigterm_drains_and_finishes_a_checkout_in_flight(start_stack: StartStack) -> None:
    async def slow_call(channel: grpc.aio.Channel) -> pb.PlaceOrderResponse:
        stub = orders_pb2_grpc.OrdersServiceStub(channel)
        request = place_request([("prod-chemex", 1)], customer="cus-drain")
        return await stub.PlaceOrder(request, timeout=TIMEOUT_S)

    reply = await assert_sigterm_drains(
        start_stack, "orders", slow_call, upstreams=["nats", "catalog", "inventory", "payments"]
    )
    assert reply.order.status == CONFIRMED, reply.order.cancel_reason
    assert reply.order.payment_id
