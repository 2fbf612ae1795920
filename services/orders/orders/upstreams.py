"""The saga's ports over gRPC: catalog, inventory and payments clients.

Each client calls through the shared channel of its upstream, as
`mesh.channels.Stubs` gives it at each call (a new one after a certificate
rotation), and puts a deadline on every call. It translates status codes into the
saga's vocabulary, in one place:

- UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED -> `Unreachable`
  (transport or load: the same call may work in a moment);
- the business answers the contracts name -> `Refused` (or `ProductNotFound`);
- anything else (INTERNAL, UNIMPLEMENTED...) -> `Refused` on the forward path,
  so a broken upstream cancels an order instead of holding it forever; on
  the compensation path, `Unreachable` unless the answer says there is
  nothing to undo, so held stock or money is never given up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import grpc

from orders.card import Card
from orders.domain import Line, Money
from orders.errors import ProductNotFound, Unreachable
from orders.ports import PaymentOutcome, Refused
from shop.catalog.v1 import catalog_pb2
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2
from shop.payments.v1 import payments_pb2

if TYPE_CHECKING:  # the async stub classes exist only in the type stubs
    from shop.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub
    from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub
    from shop.payments.v1.payments_pb2_grpc import PaymentsServiceAsyncStub

TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


def _failure(service: str, error: grpc.aio.AioRpcError) -> Exception:
    code = error.code()
    if code in TRANSIENT:
        return Unreachable(service, f"{code.name}: {error.details()}")
    return Refused(f"{service} answered {code.name}: {error.details()}")


def _compensation_failure(service: str, error: grpc.aio.AioRpcError) -> Exception:
    """Compensation must not give up on money or stock held: only an answer that
    says "nothing to undo" ends it (Refused); every other failure is retried."""
    if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return Refused(f"{service} answered {error.code().name}: {error.details()}")
    return Unreachable(service, f"{error.code().name}: {error.details()}")


class GrpcCatalog:
    def __init__(self, stub: Callable[[], CatalogServiceAsyncStub], timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def _price(self, index: int, product_id: str) -> Money:
        try:
            response = await self._stub().GetProduct(
                catalog_pb2.GetProductRequest(id=product_id), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise ProductNotFound(f"lines[{index}].product_id", product_id) from None
            raise Unreachable("catalog", f"{error.code().name}: {error.details()}") from None
        price = response.product.price
        return Money(price.currency_code, price.amount_minor)

    async def prices(self, product_ids: Sequence[str]) -> Mapping[str, Money]:
        # One GetProduct per line, concurrently: the catalog has no batch read.
        found = await asyncio.gather(*(self._price(i, p) for i, p in enumerate(product_ids)))
        return dict(zip(product_ids, found, strict=True))


class GrpcInventory:
    def __init__(self, stub: Callable[[], InventoryServiceAsyncStub], timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        request = inventory_pb2.ReserveStockRequest(
            order_id=order_id,
            lines=[
                inventory_pb2.ReservationLine(product_id=line.product_id, quantity=line.quantity)
                for line in lines
            ],
        )
        try:
            await self._stub().ReserveStock(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise Refused(f"out of stock: {error.details()}") from None
            raise _failure("inventory", error) from None

    async def commit(self, order_id: str) -> None:
        try:
            await self._stub().CommitStock(
                inventory_pb2.CommitStockRequest(order_id=order_id), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise _failure("inventory", error) from None

    async def release(self, order_id: str) -> None:
        try:
            await self._stub().ReleaseStock(
                inventory_pb2.ReleaseStockRequest(order_id=order_id), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise _compensation_failure("inventory", error) from None


def _outcome(payment: payments_pb2.Payment) -> PaymentOutcome:
    return PaymentOutcome(
        payment_id=payment.id,
        charged=payment.status == payments_pb2.PAYMENT_STATUS_CHARGED,
        decline_reason=payment.decline_reason,
        refunded=payment.status == payments_pb2.PAYMENT_STATUS_REFUNDED,
    )


class GrpcPayments:
    def __init__(self, stub: Callable[[], PaymentsServiceAsyncStub], timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def charge(
        self, idempotency_key: str, order_id: str, amount: Money, card: Card
    ) -> PaymentOutcome:
        request = payments_pb2.ChargeRequest(
            idempotency_key=idempotency_key,
            order_id=order_id,
            amount=common_pb2.Money(
                currency_code=amount.currency_code, amount_minor=amount.amount_minor
            ),
            card=payments_pb2.Card(
                number=card.number,
                expiry_month=card.expiry_month,
                expiry_year=card.expiry_year,
                cvc=card.cvc,
                holder_name=card.holder_name,
            ),
        )
        try:
            response = await self._stub().Charge(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            raise _failure("payments", error) from None
        return _outcome(response.payment)

    async def resolve_charge(self, idempotency_key: str) -> PaymentOutcome | None:
        try:
            response = await self._stub().ResolveCharge(
                payments_pb2.ResolveChargeRequest(idempotency_key=idempotency_key),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            # Only an answer settles a lost charge: any failure means "ask again".
            raise Unreachable("payments", f"{error.code().name}: {error.details()}") from None
        return _outcome(response.payment) if response.HasField("payment") else None

    async def refund(self, idempotency_key: str, payment_id: str, reason: str) -> None:
        try:
            await self._stub().Refund(
                payments_pb2.RefundRequest(
                    idempotency_key=idempotency_key, payment_id=payment_id, reason=reason
                ),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            raise _compensation_failure("payments", error) from None
