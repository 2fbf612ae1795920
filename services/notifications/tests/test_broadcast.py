"""The in-process fan-out behind StreamNotifications."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from notifications.broadcast import Broadcaster, SubscriptionEnded
from notifications.domain import Kind, Notification

WAIT = 5.0


def note(customer: str, n: int) -> Notification:
    return Notification(
        id=f"ntf_{n}",
        customer_id=customer,
        email="",
        order_id=f"ord_{n}",
        kind=Kind.ORDER_CONFIRMED,
        subject="s",
        body="b",
        source_event_id=f"evt_{n}",
        create_time=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_subscribers_get_their_customers_notifications_in_order() -> None:
    broadcaster = Broadcaster()
    with broadcaster.subscribe("a") as mine, broadcaster.subscribe(None) as everyone:
        for n, customer in enumerate(["a", "b", "a"]):
            broadcaster.publish(note(customer, n))
        assert (await asyncio.wait_for(mine.next(), WAIT)).id == "ntf_0"
        assert (await asyncio.wait_for(mine.next(), WAIT)).id == "ntf_2"
        got = [(await asyncio.wait_for(everyone.next(), WAIT)).id for _ in range(3)]
        assert got == ["ntf_0", "ntf_1", "ntf_2"]
    assert broadcaster.subscriber_count == 0


async def test_a_waiting_subscriber_wakes_up_on_publish() -> None:
    broadcaster = Broadcaster()
    with broadcaster.subscribe("a") as subscription:
        waiting = asyncio.ensure_future(subscription.next())
        await asyncio.sleep(0)
        assert not waiting.done()
        broadcaster.publish(note("a", 7))
        assert (await asyncio.wait_for(waiting, WAIT)).id == "ntf_7"


async def test_close_ends_current_and_future_subscriptions() -> None:
    broadcaster = Broadcaster()
    with broadcaster.subscribe("a") as subscription:
        waiting = asyncio.ensure_future(subscription.next())
        await asyncio.sleep(0)
        broadcaster.close()
        with pytest.raises(SubscriptionEnded) as ended:
            await asyncio.wait_for(waiting, WAIT)
        assert ended.value.shutting_down
    with broadcaster.subscribe("a") as late, pytest.raises(SubscriptionEnded):
        await asyncio.wait_for(late.next(), WAIT)


async def test_a_subscriber_that_falls_behind_is_dropped() -> None:
    broadcaster = Broadcaster(queue_size=2)
    with broadcaster.subscribe("a") as slow:
        for n in range(3):
            broadcaster.publish(note("a", n))
        with pytest.raises(SubscriptionEnded) as ended:
            await asyncio.wait_for(slow.next(), WAIT)
        assert not ended.value.shutting_down
