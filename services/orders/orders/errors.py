"""Errors of the orders service; `STATUSES` maps the caller's ones to gRPC statuses.

OrdersError                 base class, never raised itself
├── InvalidArgument         a request field is wrong                 -> INVALID_ARGUMENT
├── NotYourCustomer         the caller acts for another customer     -> PERMISSION_DENIED
│   (a mesh.identity.ActsForAnotherCustomer: the request names, or its id
│   finds, another customer than the gateway's `x-shop-subject`)
├── OrderNotFound           no order has that id                     -> NOT_FOUND
├── ProductNotFound         a line names a product catalog lacks     -> NOT_FOUND
├── KeyReused               idempotency_key sent with another request -> FAILED_PRECONDITION
├── NotSellable             the products cannot be sold together     -> FAILED_PRECONDITION
└── Unreachable             an upstream did not answer in time       -> UNAVAILABLE
    (also what the saga's ports raise for a transport failure; the saga
    retries it, and PlaceOrder reports it only once the order is compensated
    or must wait for the upstream to come back)

A business failure of the saga (too little stock, a declined card) is not an
error: the order ends CANCELLED with a reason, and PlaceOrder returns it.
"""

import grpc

from mesh.identity import ActsForAnotherCustomer
from mesh.status import InvalidField, StatusTable


class OrdersError(Exception):
    """Base of every error the orders service raises on purpose."""


class InvalidArgument(InvalidField, OrdersError):
    """A request field is malformed; `field` names it as in the contract."""


class NotYourCustomer(ActsForAnotherCustomer, OrdersError):
    """The caller acts for one customer and the request is about another."""


class OrderNotFound(OrdersError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order with id {order_id!r}")


class ProductNotFound(OrdersError):
    def __init__(self, field: str, product_id: str) -> None:
        super().__init__(f"{field}: no product with id {product_id!r} in the catalog")
        self.product_id = product_id


class KeyReused(OrdersError):
    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency_key: {key!r} was already used for a different order request")


class NotSellable(OrdersError):
    """The request is well formed but the shop cannot sell it as one order."""


class Unreachable(OrdersError):
    """An upstream failed in transit (UNAVAILABLE, DEADLINE_EXCEEDED...): worth retrying."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service} could not be reached: {detail}")
        self.service = service


STATUSES: StatusTable = {
    # Ours, and those of mesh.paging (page_size, page_token).
    InvalidField: grpc.StatusCode.INVALID_ARGUMENT,
    ActsForAnotherCustomer: grpc.StatusCode.PERMISSION_DENIED,
    OrderNotFound: grpc.StatusCode.NOT_FOUND,
    ProductNotFound: grpc.StatusCode.NOT_FOUND,
    KeyReused: grpc.StatusCode.FAILED_PRECONDITION,
    NotSellable: grpc.StatusCode.FAILED_PRECONDITION,
    Unreachable: grpc.StatusCode.UNAVAILABLE,
}
