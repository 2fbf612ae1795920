"""Writes vectors.json: messages of every contract, built with the Python stubs.

Each vector holds a message's full proto name, its proto3 JSON as json_format
prints it, and its deterministic binary encoding as hex. The Python, Go and
TypeScript contract tests decode, re-encode and parse these and must agree
byte for byte. tests/contract/test_wire_vectors.py fails if the committed file
differs from what this script writes, so change the messages here and rerun:

    .venv/bin/python tests/contract/wire/make_vectors.py

Timestamps use whole milliseconds because ts-proto maps them to `Date`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from shop.catalog.v1 import catalog_pb2
from shop.common.v1 import common_pb2
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2
from shop.notifications.v1 import notifications_pb2
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2

VECTORS_PATH = Path(__file__).resolve().parent / "vectors.json"

# 2**53 + 1: the smallest positive integer a JavaScript number cannot hold.
BEYOND_2_53 = 9_007_199_254_740_993


class Vector(TypedDict):
    name: str
    type: str
    json: dict[str, Any]
    hex: str


def timestamp(seconds: int, millis: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=millis * 1_000_000)


def eur(amount_minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount_minor)


def messages() -> list[tuple[str, Message]]:
    """The named messages, in the order they appear in vectors.json."""
    placed = timestamp(1_773_480_413, 250)  # 2026-03-14T09:26:53.250Z
    confirmed = timestamp(1_773_480_414)  # 2026-03-14T09:26:54Z, no fraction
    return [
        (
            "catalog_product",
            catalog_pb2.Product(
                id="prod-chemex",
                name="Chemex 6-cup",
                description="Glass pour-over brewer with a wooden collar.",
                category="coffee",
                price=eur(4_590),
            ),
        ),
        (
            "catalog_product_int64_beyond_2_53",
            catalog_pb2.Product(
                id="prod-gold-espresso-machine",
                name="Gold espresso machine",
                category="coffee",
                price=common_pb2.Money(currency_code="USD", amount_minor=BEYOND_2_53),
            ),
        ),
        (
            "orders_order_confirmed",
            orders_pb2.Order(
                id="ord-0001",
                customer_id="cust-42",
                email="ada@example.com",
                items=[
                    orders_pb2.OrderItem(
                        product_id="prod-chemex", quantity=1, unit_price=eur(4_590)
                    ),
                    orders_pb2.OrderItem(
                        product_id="prod-filters-100", quantity=3, unit_price=eur(799)
                    ),
                ],
                total=eur(6_987),
                status=orders_pb2.ORDER_STATUS_CONFIRMED,
                payment_id="pay-0001",
                create_time=placed,
                update_time=confirmed,
            ),
        ),
        (
            "inventory_reserve_stock_request",
            inventory_pb2.ReserveStockRequest(
                order_id="ord-0001",
                lines=[
                    inventory_pb2.ReservationLine(product_id="prod-chemex", quantity=1),
                    inventory_pb2.ReservationLine(product_id="prod-filters-100", quantity=300),
                ],
            ),
        ),
        (
            "payments_payment_declined",
            payments_pb2.Payment(
                id="pay-0002",
                order_id="ord-0002",
                amount=eur(12_999),
                status=payments_pb2.PAYMENT_STATUS_DECLINED,
                decline_reason="insufficient funds",
                card_last4="0002",
                create_time=placed,
            ),
        ),
        (
            "notifications_notification_unicode",
            notifications_pb2.Notification(
                id="ntf-0001",
                customer_id="cust-42",
                email="zoë@example.com",
                order_id="ord-0001",
                kind=notifications_pb2.NOTIFICATION_KIND_ORDER_CONFIRMED,
                subject="Bestellung bestätigt ☕",
                body="Grüße! Your order ord-0001 is confirmed: 69,87 €.\n",
                source_event_id="evt-0001",
                create_time=confirmed,
            ),
        ),
        (
            "events_order_confirmed",
            events_pb2.OrderConfirmed(
                event_id="evt-0001",
                occur_time=confirmed,
                order_id="ord-0001",
                customer_id="cust-42",
                email="ada@example.com",
                total=eur(6_987),
                payment_id="pay-0001",
            ),
        ),
        (
            "events_order_cancelled",
            events_pb2.OrderCancelled(
                event_id="evt-0002",
                occur_time=timestamp(1_773_480_415, 7),
                order_id="ord-0002",
                customer_id="cust-43",
                email="bob@example.com",
                reason="Your card was declined.",
            ),
        ),
        # Every field at its default: nothing on the wire, "{}" in JSON.
        ("orders_order_all_defaults", orders_pb2.Order()),
        # A message field that is set but empty is present: two bytes, {"price": {}}.
        ("catalog_product_empty_price", catalog_pb2.Product(price=common_pb2.Money())),
    ]


def vector(name: str, message: Message) -> Vector:
    return {
        "name": name,
        "type": message.DESCRIPTOR.full_name,
        "json": json_format.MessageToDict(message),
        "hex": message.SerializeToString(deterministic=True).hex(),
    }


def render() -> str:
    """The exact text of vectors.json."""
    vectors = [vector(name, message) for name, message in messages()]
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    VECTORS_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {VECTORS_PATH}")


if __name__ == "__main__":
    main()
