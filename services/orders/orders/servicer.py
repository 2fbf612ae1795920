"""gRPC face of the orders service: protobuf in, domain call, protobuf out.

Every domain error maps to one status through `orders.errors.STATUSES`. The
caller's subject (`mesh.identity`, from the gateway) goes to every use case,
which refuses a request about another customer.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from mesh.identity import subject
from mesh.status import Context, maps_errors
from orders.card import Card
from orders.checkout import Orders
from orders.domain import Line, Order, Status, check_place_order
from orders.errors import STATUSES
from shop.common.v1 import common_pb2
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

_STATUSES = {
    Status.PENDING: orders_pb2.ORDER_STATUS_PENDING,
    Status.CONFIRMED: orders_pb2.ORDER_STATUS_CONFIRMED,
    Status.CANCELLED: orders_pb2.ORDER_STATUS_CANCELLED,
}


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _money(currency_code: str, amount_minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency_code, amount_minor=amount_minor)


def order_to_proto(order: Order) -> orders_pb2.Order:
    return orders_pb2.Order(
        id=order.id,
        customer_id=order.customer_id,
        email=order.email,
        items=[
            orders_pb2.OrderItem(
                product_id=item.product_id,
                quantity=item.quantity,
                unit_price=_money(item.unit_price.currency_code, item.unit_price.amount_minor),
            )
            for item in order.items
        ],
        total=_money(order.total.currency_code, order.total.amount_minor),
        status=_STATUSES[order.status],
        # The saga records the reason when compensation starts; the contract
        # shows it only once the order is CANCELLED.
        cancel_reason=order.cancel_reason if order.status is Status.CANCELLED else "",
        payment_id=order.payment_id,
        create_time=_timestamp(order.create_time),
        update_time=_timestamp(order.update_time),
    )


class OrdersServicer(orders_pb2_grpc.OrdersServiceServicer):
    def __init__(self, orders: Orders) -> None:
        self._orders = orders

    @maps_errors(STATUSES)
    async def PlaceOrder(  # noqa: N802 (name fixed by the contract)
        self, request: orders_pb2.PlaceOrderRequest, context: Context
    ) -> orders_pb2.PlaceOrderResponse:
        card = request.card if request.HasField("card") else None
        place = check_place_order(
            request.idempotency_key,
            request.customer_id,
            request.email,
            [Line(line.product_id, line.quantity) for line in request.lines],
            None
            if card is None
            else Card(card.number, card.expiry_month, card.expiry_year, card.cvc, card.holder_name),
            datetime.now(UTC),
        )
        order = await self._orders.place_order(
            place, subject=subject(context.invocation_metadata())
        )
        return orders_pb2.PlaceOrderResponse(order=order_to_proto(order))

    @maps_errors(STATUSES)
    async def GetOrder(  # noqa: N802
        self, request: orders_pb2.GetOrderRequest, context: Context
    ) -> orders_pb2.GetOrderResponse:
        order = await self._orders.get_order(
            request.id, subject=subject(context.invocation_metadata())
        )
        return orders_pb2.GetOrderResponse(order=order_to_proto(order))

    @maps_errors(STATUSES)
    async def ListOrders(  # noqa: N802
        self, request: orders_pb2.ListOrdersRequest, context: Context
    ) -> orders_pb2.ListOrdersResponse:
        page = await self._orders.list_orders(
            request.customer_id,
            request.page_size,
            request.page_token,
            subject=subject(context.invocation_metadata()),
        )
        return orders_pb2.ListOrdersResponse(
            orders=[order_to_proto(o) for o in page.orders], next_page_token=page.next_page_token
        )
