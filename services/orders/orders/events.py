"""The events an order's end publishes (`shop.events.v1`), as outbox rows.

The row is built in the transaction that ends the order (see `orders.store`),
so an order is terminal if and only if its event is on the way. `headers`
hold the W3C trace context of the saga at that moment: the relay publishes
under it, so the consumer's span joins the order's trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf import timestamp_pb2

from mesh.events import ORDER_CANCELLED, ORDER_CONFIRMED
from orders.domain import Order, new_event_id
from shop.common.v1 import common_pb2
from shop.events.v1 import events_pb2


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    order_id: str
    subject: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    # Assigned by the store: the relay publishes in this order.
    seq: int = 0


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def order_confirmed(order: Order, now: datetime, headers: Mapping[str, str]) -> OutboxEvent:
    event_id = new_event_id()
    message = events_pb2.OrderConfirmed(
        event_id=event_id,
        occur_time=_timestamp(now),
        order_id=order.id,
        customer_id=order.customer_id,
        email=order.email,
        total=common_pb2.Money(
            currency_code=order.total.currency_code, amount_minor=order.total.amount_minor
        ),
        payment_id=order.payment_id,
    )
    return OutboxEvent(event_id, order.id, ORDER_CONFIRMED, message.SerializeToString(), headers)


def order_cancelled(order: Order, now: datetime, headers: Mapping[str, str]) -> OutboxEvent:
    event_id = new_event_id()
    message = events_pb2.OrderCancelled(
        event_id=event_id,
        occur_time=_timestamp(now),
        order_id=order.id,
        customer_id=order.customer_id,
        email=order.email,
        reason=order.cancel_reason,
    )
    return OutboxEvent(event_id, order.id, ORDER_CANCELLED, message.SerializeToString(), headers)
