"""Checkout under faults, with every service a real process: nothing lost, nothing doubled.

- orders SIGKILLed between two saga steps (held there by the test-only
  ORDERS_TEST_PAUSE_AFTER_STEP) and restarted without the switch: the
  resumed saga ends the order, inventory and payments agree with the
  outcome, and the customer gets exactly one notification;
- notifications SIGKILLed after storing a notification and before acking it
  (NOTIFICATIONS_TEST_SKIP_ACK makes "before the ack" certain): JetStream
  redelivers after the restart, and there is still exactly one;
- NATS stopped while orders confirm: the events wait in the outbox and all
  arrive, once each, when NATS is back.

Each fault test also shows it can fail: while the fault lasts (orders dead,
the ack never sent, NATS down) the same checks are seen to fail, so what
makes them pass is the recovery, not the test's timing.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import nats
import pytest
from nats.js import api

from mesh.events import ORDERS_STREAM
from notifications.consumer import DURABLE_NAME
from shop.orders.v1 import orders_pb2
from tests.e2e.checkout_support import (
    CANCELLED,
    CHARGED,
    CHARGED_CARD,
    CONFIRMED,
    DECLINED,
    DECLINED_CARD,
    KIND,
    CheckoutMesh,
    StartStack,
    Stock,
    checkout_mesh,
    consistency_errors,
    eventually,
    new_customer,
    order_request,
)

pytestmark = pytest.mark.e2e

WAIT_S = 30.0  # bound of every "until it happens" poll
HOLD_S = 2.0  # how long a fault is held to see that nothing moves meanwhile
SETTLE_S = 2.0  # how long we watch for a second notification that must not come
# How long the control waits in vain for notifications with NATS down: more
# than the about 5 s they take once NATS is back (a pull request the
# consumer sent before NATS stopped is only replaced when its wait expires).
CONTROL_WAIT_S = 10.0
PRODUCT = "prod-teapot-cast-iron"  # 10 in the seed
QUANTITY = 2


async def assert_one_notification(
    mesh: CheckoutMesh, customer: str, order: orders_pb2.Order
) -> str:
    """Exactly one notification for the order, of its kind, also after SETTLE_S; its id."""
    listed = await mesh.wait_notified(customer, [order.id], WAIT_S)
    mine = [n for n in listed if n.order_id == order.id]
    assert len(mine) == 1, mine
    assert mine[0].kind == KIND[order.status]
    await asyncio.sleep(SETTLE_S)
    again = [n for n in await mesh.notifications_of(customer) if n.order_id == order.id]
    assert [n.id for n in again] == [mine[0].id], "a second notification arrived"
    return mine[0].id


@pytest.mark.parametrize(
    ("step", "card", "outcome"),
    [
        # The card is never stored: the resumed saga cannot charge it, asks
        # payments with ResolveCharge, learns nothing was charged, and cancels.
        pytest.param("reserved", CHARGED_CARD, CANCELLED, id="reserved-card-lost"),
        # Money moved before the kill: the resumed saga goes forward.
        pytest.param("charged", CHARGED_CARD, CONFIRMED, id="charged"),
        # Declined, units still held at the kill: the resumed saga releases them.
        pytest.param("compensating", DECLINED_CARD, CANCELLED, id="compensating-declined"),
    ],
)
async def test_orders_killed_after_a_step_finishes_the_order_on_restart(
    start_stack: StartStack, step: str, card: str, outcome: int
) -> None:
    env = {"orders": {"ORDERS_TEST_PAUSE_AFTER_STEP": step}}
    async with checkout_mesh(start_stack, env) as mesh:
        customer = new_customer(f"cus-kill-{step}")
        before = (await mesh.stock([PRODUCT]))[PRODUCT]
        request = order_request(customer, [(PRODUCT, QUANTITY)], card)
        call = asyncio.ensure_future(mesh.orders.PlaceOrder(request, timeout=2 * WAIT_S))

        async def at_step() -> str | None:
            order_id = await mesh.order_id_of(request.idempotency_key)
            if order_id is not None and await mesh.order_step(order_id) == step:
                return order_id
            return None

        order_id = await eventually(at_step, f"the order at step {step!r}", WAIT_S)
        assert not call.done(), "PlaceOrder returned although the saga is held"
        await mesh.kill("orders")
        with pytest.raises(grpc.aio.AioRpcError) as killed:
            await asyncio.wait_for(call, WAIT_S)
        assert killed.value.code() == grpc.StatusCode.UNAVAILABLE

        # Control: with orders dead, nothing finishes the order. The checks
        # below that pass after the restart fail here.
        await asyncio.sleep(HOLD_S)
        assert await mesh.order_step(order_id) == step  # still PENDING
        assert order_id not in await mesh.outbox()
        assert (await mesh.stock([PRODUCT]))[PRODUCT] == Stock(
            before.available - QUANTITY, before.reserved + QUANTITY
        )  # held, neither committed nor given back
        assert await mesh.notifications_of(customer) == []

        await mesh.restart("orders", drop=["ORDERS_TEST_PAUSE_AFTER_STEP"])
        order = await mesh.wait_terminal(order_id, WAIT_S)
        assert order.status == outcome, order

        payment = await mesh.resolve_charge(order_id)
        assert consistency_errors(order, payment) == []
        after = (await mesh.stock([PRODUCT]))[PRODUCT]
        if outcome == CONFIRMED:
            assert payment is not None
            assert payment.status == CHARGED
            assert after == Stock(before.available - QUANTITY, before.reserved)
        else:
            assert after == before  # every unit back
            if step == "reserved":
                assert payment is None  # and never will be: the key is retired
                assert "nothing was charged" in order.cancel_reason
            else:
                assert payment is not None
                assert payment.status == DECLINED
                assert "declined" in order.cancel_reason
        await assert_one_notification(mesh, customer, order)

        # The client's retry of the killed call gets the same order, not a second one.
        retried = await mesh.orders.PlaceOrder(request, timeout=WAIT_S)
        assert retried.order.id == order_id
        assert retried.order.status == outcome
        assert (await mesh.stock([PRODUCT]))[PRODUCT] == after
        assert len(await mesh.notifications_of(customer)) == 1
        assert await mesh.outbox() == {order_id: True}


async def test_notifications_killed_before_the_ack_gets_the_event_again_and_notifies_once(
    start_stack: StartStack,
) -> None:
    skip_ack = {"NOTIFICATIONS_ACK_WAIT_SECONDS": "2", "NOTIFICATIONS_TEST_SKIP_ACK": "true"}
    async with checkout_mesh(start_stack, {"notifications": skip_ack}) as mesh:
        client = await nats.connect(mesh.nats_url, connect_timeout=5)
        try:
            js = client.jetstream()

            async def consumer() -> api.ConsumerInfo:
                info: api.ConsumerInfo = await js.consumer_info(ORDERS_STREAM.name, DURABLE_NAME)
                return info

            async def deliveries() -> int:
                delivered = (await consumer()).delivered
                assert delivered is not None
                return delivered.consumer_seq

            customer = new_customer("cus-unacked")
            placed = await mesh.orders.PlaceOrder(
                order_request(customer, [(PRODUCT, 1)]), timeout=WAIT_S
            )
            order = placed.order
            assert order.status == CONFIRMED
            listed = await mesh.wait_notified(customer, [order.id], WAIT_S)
            stored = [n.id for n in listed if n.order_id == order.id]
            assert len(stored) == 1
            # Control: stored, and the ack never went (JetStream still waits for it).
            await asyncio.sleep(HOLD_S)
            assert (await consumer()).num_ack_pending == 1

            await mesh.kill("notifications")
            delivered = await deliveries()  # nobody can take a delivery now
            await mesh.restart("notifications", drop=["NOTIFICATIONS_TEST_SKIP_ACK"])

            async def acked() -> api.ConsumerInfo | None:
                info = await consumer()
                return info if info.num_ack_pending == 0 and info.num_redelivered == 0 else None

            await eventually(acked, "the redelivered event acked", WAIT_S)
            assert await deliveries() > delivered  # delivered again after the restart
            again = await assert_one_notification(mesh, customer, order)
            assert again == stored[0]  # the first one, kept; the redelivery added nothing
        finally:
            await client.close()


@pytest.mark.parametrize(
    "nats_back",
    [
        pytest.param(True, id="nats-restarted"),
        # Control: NATS never comes back, and for longer than the other case
        # needs once it is back, no notification arrives.
        pytest.param(False, id="control-nats-stays-down"),
    ],
)
async def test_orders_confirmed_while_nats_is_down_are_notified_once_it_is_back(
    start_stack: StartStack, nats_back: bool
) -> None:
    async with checkout_mesh(start_stack) as mesh:
        await mesh.stop("nats")
        customer = new_customer("cus-no-nats")
        products = ["prod-aeropress", "prod-chemex", PRODUCT]
        order_ids = []
        for product in products:  # the saga needs no NATS: each order is confirmed
            reply = await mesh.orders.PlaceOrder(
                order_request(customer, [(product, 1)]), timeout=WAIT_S
            )
            assert reply.order.status == CONFIRMED, reply.order
            order_ids.append(reply.order.id)
        await asyncio.sleep(HOLD_S)  # the relay tries and fails meanwhile
        outbox = await mesh.outbox()
        assert {i: outbox.get(i) for i in order_ids} == dict.fromkeys(order_ids, False)
        assert await mesh.notifications_of(customer) == []

        if not nats_back:
            with pytest.raises(AssertionError, match="not within"):
                await mesh.wait_notified(customer, order_ids, CONTROL_WAIT_S)
            assert await mesh.notifications_of(customer) == []
            assert set((await mesh.outbox()).values()) == {False}  # still waiting, not lost
            return

        await mesh.restart("nats")  # the same store folder: stream and consumer are kept
        started = time.monotonic()
        await mesh.wait_notified(customer, order_ids, WAIT_S)
        waited = time.monotonic() - started
        print(f"\n{len(order_ids)} notifications arrived {waited:.1f}s after NATS restarted")
        await asyncio.sleep(SETTLE_S)
        listed = await mesh.notifications_of(customer)
        assert sorted(n.order_id for n in listed) == sorted(order_ids)  # one each
        assert {n.kind for n in listed} == {KIND[CONFIRMED]}

        async def all_sent() -> bool | None:
            return True if set((await mesh.outbox()).values()) == {True} else None

        await eventually(all_sent, "every outbox row marked sent", WAIT_S)
        for order_id in order_ids:
            order = await mesh.get_order(order_id)
            assert consistency_errors(order, await mesh.resolve_charge(order_id)) == []
