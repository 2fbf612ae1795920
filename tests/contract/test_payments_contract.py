"""PaymentsService over real gRPC against the real Node process (`make build`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from localmode.processes import Stack
from localmode.topology import LocalService
from shop.common.v1.common_pb2 import Money
from shop.payments.v1 import payments_pb2 as pb
from shop.payments.v1 import payments_pb2_grpc
from tests.contract.grpc_checks import (
    NO_TRACING,
    assert_invalid_field,
    assert_serving,
    assert_sigterm_drains,
)

if TYPE_CHECKING:  # the async stub class exists only in the type stubs
    Stub = payments_pb2_grpc.PaymentsServiceAsyncStub

StartStack = Callable[..., dict[str, LocalService]]
SERVICE = "shop.payments.v1.PaymentsService"
CHARGED, DECLINED, REFUNDED = (
    pb.PAYMENT_STATUS_CHARGED,
    pb.PAYMENT_STATUS_DECLINED,
    pb.PAYMENT_STATUS_REFUNDED,
)
NEXT_YEAR = datetime.now(UTC).year + 1
# The documented test cards (README), and one more valid number (Luhn-correct).
VISA_OK = "4242424242424242"
DECLINED_CARD = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"
PROCESSOR_DOWN = "4000000000000119"
MASTERCARD = "5555555555554444"


@pytest.fixture
def payments(start_stack: StartStack, tmp_path: Path) -> LocalService:
    env = {**NO_TRACING, "PAYMENTS_DB_PATH": str(tmp_path / "payments.db")}
    return start_stack(["payments"], env={"payments": env})["payments"]


@pytest.fixture
async def stub(payments: LocalService) -> AsyncIterator[Stub]:
    assert payments.grpc_target is not None
    async with grpc.aio.insecure_channel(payments.grpc_target) as channel:
        yield payments_pb2_grpc.PaymentsServiceStub(channel)


def card(number: str = VISA_OK, **overrides: Any) -> pb.Card:
    fields: dict[str, Any] = {
        "number": number,
        "expiry_month": 12,
        "expiry_year": NEXT_YEAR,
        "cvc": "123",
        "holder_name": "Ada Lovelace",
    }
    return pb.Card(**(fields | overrides))


def charge_request(
    key: str = "key-1", number: str = VISA_OK, amount: int = 4950, **card_fields: Any
) -> pb.ChargeRequest:
    return pb.ChargeRequest(
        idempotency_key=key,
        order_id=f"order-for-{key}",
        amount=Money(currency_code="EUR", amount_minor=amount),
        card=card(number, **card_fields),
    )


async def charge(stub: Stub, request: pb.ChargeRequest) -> pb.Payment:
    return (await stub.Charge(request)).payment


async def resolve(stub: Stub, key: str) -> pb.Payment | None:
    """What ResolveCharge says about `key`: the payment, or None when it is unset."""
    reply = await stub.ResolveCharge(pb.ResolveChargeRequest(idempotency_key=key))
    return reply.payment if reply.HasField("payment") else None


def payments_of_order(db: Path, order_id: str) -> int:
    """How many payments the service stored for `order_id`, read from its file."""
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as connection:
        query = "SELECT count(*) FROM payments WHERE order_id = ?"
        count: int = connection.execute(query, (order_id,)).fetchone()[0]
    return count


def database_bytes(db: Path) -> bytes:
    """The database file and its WAL and shared-memory files, as stored on disk."""
    return b"".join(path.read_bytes() for path in db.parent.glob(f"{db.name}*"))


async def error_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def test_charge_then_get(stub: Stub) -> None:
    payment = await charge(stub, charge_request())
    assert payment.status == CHARGED
    assert payment.id
    assert payment.order_id == "order-for-key-1"
    assert (payment.amount.currency_code, payment.amount.amount_minor) == ("EUR", 4950)
    assert payment.card_last4 == "4242"
    assert payment.decline_reason == ""
    assert abs(payment.create_time.ToDatetime(UTC) - datetime.now(UTC)).total_seconds() < 300
    got = await stub.GetPayment(pb.GetPaymentRequest(id=payment.id))
    assert got.payment == payment


async def test_int64_amounts_survive_exactly(stub: Stub) -> None:
    """No rounding through a JavaScript number: 2^53 + 1 is not a double."""
    huge = 2**53 + 1
    payment = await charge(stub, charge_request("key-huge", amount=huge))
    assert payment.amount.amount_minor == huge
    got = await stub.GetPayment(pb.GetPaymentRequest(id=payment.id))
    assert got.payment.amount.amount_minor == huge


@pytest.mark.parametrize(
    ("number", "status", "reason"),
    [
        (VISA_OK, CHARGED, ""),
        (DECLINED_CARD, DECLINED, "card_declined"),
        (INSUFFICIENT_FUNDS, DECLINED, "insufficient_funds"),
        (MASTERCARD, CHARGED, ""),
    ],
)
async def test_test_cards(stub: Stub, number: str, status: int, reason: str) -> None:
    payment = await charge(stub, charge_request(f"key-{number}", number))
    assert (payment.status, payment.decline_reason) == (status, reason)
    assert payment.card_last4 == number[-4:]


async def test_processor_outage_is_unavailable_and_stores_nothing(stub: Stub) -> None:
    request = charge_request("key-outage", PROCESSOR_DOWN)
    for _ in range(2):  # a retry with the same key runs again: nothing was recorded
        error = await error_of(stub.Charge(request))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The key is still free for another request.
    payment = await charge(stub, charge_request("key-outage", VISA_OK))
    assert payment.status == CHARGED


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: charge_request(key=""), "idempotency_key"),
        (
            lambda: pb.ChargeRequest(
                idempotency_key="k", card=card(), amount=Money(currency_code="EUR", amount_minor=1)
            ),
            "order_id",
        ),
        (lambda: pb.ChargeRequest(idempotency_key="k", order_id="o", card=card()), "amount"),
        (lambda: charge_request(amount=0), "amount.amount_minor"),
        (lambda: charge_request(amount=-5), "amount.amount_minor"),
        (
            lambda: pb.ChargeRequest(
                idempotency_key="k",
                order_id="o",
                amount=Money(currency_code="eur", amount_minor=1),
                card=card(),
            ),
            "amount.currency_code",
        ),
        (
            lambda: pb.ChargeRequest(
                idempotency_key="k", order_id="o", amount=Money(currency_code="EUR", amount_minor=1)
            ),
            "card",
        ),
        (lambda: charge_request(number="4242424242424241"), "card.number"),  # Luhn
        (lambda: charge_request(number="42424242424"), "card.number"),  # 11 digits
        (lambda: charge_request(number="4242 4242 4242 4242"), "card.number"),
        (lambda: charge_request(expiry_month=13), "card.expiry_month"),
        (lambda: charge_request(expiry_month=0), "card.expiry_month"),
        (lambda: charge_request(expiry_year=27), "card.expiry_year"),
        (lambda: charge_request(expiry_year=2020), "card.expiry_year"),  # past
        (lambda: charge_request(cvc="12"), "card.cvc"),
        (lambda: charge_request(cvc="12a"), "card.cvc"),
    ],
)
async def test_charge_invalid_argument_names_the_field(
    stub: Stub, build: Callable[[], pb.ChargeRequest], field: str
) -> None:
    assert_invalid_field(await error_of(stub.Charge(build())), field)


async def test_expired_this_year_names_the_month(stub: Stub) -> None:
    now = datetime.now(UTC)
    if now.month == 1:
        pytest.skip("in January no month of this year is past")
    request = charge_request(expiry_month=now.month - 1, expiry_year=now.year)
    assert_invalid_field(await error_of(stub.Charge(request)), "card.expiry_month")
    valid = charge_request("key-this-month", expiry_month=now.month, expiry_year=now.year)
    assert (await charge(stub, valid)).status == CHARGED  # valid through its month


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    [
        ("Refund", pb.RefundRequest(payment_id="p"), "idempotency_key"),
        ("Refund", pb.RefundRequest(idempotency_key="k"), "payment_id"),
        ("GetPayment", pb.GetPaymentRequest(), "id"),
        ("ResolveCharge", pb.ResolveChargeRequest(), "idempotency_key"),
    ],
)
async def test_invalid_argument_names_the_field(
    stub: Stub, rpc: str, request_: Any, field: str
) -> None:
    assert_invalid_field(await error_of(getattr(stub, rpc)(request_)), field)


async def test_unknown_payment_is_not_found(stub: Stub) -> None:
    error = await error_of(stub.GetPayment(pb.GetPaymentRequest(id="pay_missing")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "pay_missing" in (error.details() or "")
    error = await error_of(stub.Refund(pb.RefundRequest(idempotency_key="r", payment_id="pay_x")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_same_key_same_request_returns_the_first_payment(stub: Stub) -> None:
    first = await charge(stub, charge_request("key-twice"))
    second = await charge(stub, charge_request("key-twice"))
    assert second == first
    declined = await charge(stub, charge_request("key-declined", DECLINED_CARD))
    assert await charge(stub, charge_request("key-declined", DECLINED_CARD)) == declined


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": 4951},
        {"number": MASTERCARD},
        {"cvc": "999"},
    ],
)
async def test_same_key_different_request_is_failed_precondition(
    stub: Stub, changed: dict[str, Any]
) -> None:
    first = await charge(stub, charge_request("key-x"))
    error = await error_of(stub.Charge(charge_request("key-x", **changed)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "idempotency_key" in (error.details() or "")
    assert (await stub.GetPayment(pb.GetPaymentRequest(id=first.id))).payment == first


async def test_concurrent_charges_with_one_key_charge_once(stub: Stub) -> None:
    results = await asyncio.gather(*(charge(stub, charge_request("key-race")) for _ in range(20)))
    assert len({payment.id for payment in results}) == 1
    assert {payment.status for payment in results} == {CHARGED}


async def test_refund_life_cycle(stub: Stub) -> None:
    payment = await charge(stub, charge_request("key-refund"))
    refund = pb.RefundRequest(idempotency_key="refund-1", payment_id=payment.id, reason="saga")
    refunded = (await stub.Refund(refund)).payment
    assert refunded.id == payment.id
    assert refunded.status == REFUNDED
    assert (await stub.Refund(refund)).payment == refunded  # same key: same result
    other_key = pb.RefundRequest(idempotency_key="refund-2", payment_id=payment.id)
    assert (await stub.Refund(other_key)).payment == refunded  # already refunded: unchanged
    got = await stub.GetPayment(pb.GetPaymentRequest(id=payment.id))
    assert got.payment.status == REFUNDED


async def test_refund_failed_preconditions(stub: Stub) -> None:
    declined = await charge(stub, charge_request("key-d", DECLINED_CARD))
    error = await error_of(
        stub.Refund(pb.RefundRequest(idempotency_key="refund-d", payment_id=declined.id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    charged = await charge(stub, charge_request("key-c"))
    # A key already used for a charge is a different request.
    error = await error_of(
        stub.Refund(pb.RefundRequest(idempotency_key="key-c", payment_id=charged.id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    first = pb.RefundRequest(idempotency_key="refund-c", payment_id=charged.id, reason="a")
    await stub.Refund(first)
    changed = pb.RefundRequest(idempotency_key="refund-c", payment_id=charged.id, reason="b")
    error = await error_of(stub.Refund(changed))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("number", "status", "reason"),
    [(VISA_OK, CHARGED, ""), (INSUFFICIENT_FUNDS, DECLINED, "insufficient_funds")],
)
async def test_resolve_charge_returns_the_payment_made(
    stub: Stub, number: str, status: int, reason: str
) -> None:
    payment = await charge(stub, charge_request("key-made", number))
    assert (payment.status, payment.decline_reason) == (status, reason)
    assert await resolve(stub, "key-made") == payment
    assert await resolve(stub, "key-made") == payment  # again: the same answer
    assert await charge(stub, charge_request("key-made", number)) == payment  # still repeatable


async def test_resolve_charge_after_a_refund_returns_it_refunded(stub: Stub) -> None:
    payment = await charge(stub, charge_request("key-then-refunded"))
    refund = pb.RefundRequest(idempotency_key="refund-r", payment_id=payment.id, reason="saga")
    refunded = (await stub.Refund(refund)).payment
    assert refunded.status == REFUNDED
    assert await resolve(stub, "key-then-refunded") == refunded


async def test_resolve_charge_of_an_unused_key_retires_it(stub: Stub, tmp_path: Path) -> None:
    assert await resolve(stub, "key-lost") is None
    request = charge_request("key-lost")
    for _ in range(2):  # a late Charge, then a repeat: refused, no money moves
        error = await error_of(stub.Charge(request))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = error.details() or ""
        assert "idempotency_key 'key-lost' was retired by ResolveCharge" in details, details
    assert await resolve(stub, "key-lost") is None  # again: the same answer
    assert payments_of_order(tmp_path / "payments.db", request.order_id) == 0
    # Only that key is retired: other charges go on as before.
    assert (await charge(stub, charge_request("key-not-lost"))).status == CHARGED


async def test_resolve_charge_after_a_processor_outage_retires_the_key(
    stub: Stub, tmp_path: Path
) -> None:
    """The outage stored nothing, so there is no charge: the key is retired, a retry refused."""
    request = charge_request("key-outage-lost", PROCESSOR_DOWN)
    error = await error_of(stub.Charge(request))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert await resolve(stub, "key-outage-lost") is None
    for retry in (request, charge_request("key-outage-lost", VISA_OK)):
        error = await error_of(stub.Charge(retry))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert payments_of_order(tmp_path / "payments.db", request.order_id) == 0


async def test_resolve_charge_of_a_refund_key_is_failed_precondition(stub: Stub) -> None:
    payment = await charge(stub, charge_request("key-for-refund"))
    refund = pb.RefundRequest(idempotency_key="refund-key", payment_id=payment.id)
    refunded = (await stub.Refund(refund)).payment
    error = await error_of(
        stub.ResolveCharge(pb.ResolveChargeRequest(idempotency_key="refund-key"))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Refund" in (error.details() or "")
    assert (await stub.Refund(refund)).payment == refunded  # the refund key is untouched


async def test_resolve_charge_racing_charge_agrees_with_it(stub: Stub, tmp_path: Path) -> None:
    """Each key is either charged and resolved to that payment, or retired and refused."""

    async def charge_or_refusal(key: str) -> pb.Payment | grpc.StatusCode:
        try:
            return await charge(stub, charge_request(key))
        except grpc.aio.AioRpcError as error:
            return error.code()

    async def race(key: str) -> tuple[pb.Payment | grpc.StatusCode, pb.Payment | None]:
        charged, resolved = await asyncio.gather(charge_or_refusal(key), resolve(stub, key))
        return charged, resolved

    keys = [f"key-race-resolve-{i}" for i in range(20)]
    results = await asyncio.gather(*(race(key) for key in keys))
    for key, (charged, resolved) in zip(keys, results, strict=True):
        if resolved is None:
            assert charged == grpc.StatusCode.FAILED_PRECONDITION, key
            assert payments_of_order(tmp_path / "payments.db", f"order-for-{key}") == 0
        else:
            assert charged == resolved, key


async def test_reports_serving(payments: LocalService) -> None:
    assert payments.grpc_target is not None
    await assert_serving(payments.grpc_target, SERVICE)


async def test_sigterm_drains_and_finishes_in_flight_calls(
    start_stack: StartStack, tmp_path: Path
) -> None:
    async def slow_call(channel: grpc.aio.Channel) -> pb.ChargeResponse:
        stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        return await stub.Charge(charge_request("key-drain"), timeout=10)

    reply = await assert_sigterm_drains(
        start_stack, "payments", slow_call, env={"PAYMENTS_DB_PATH": str(tmp_path / "drain.db")}
    )
    assert reply.payment.status == CHARGED


async def test_data_survives_a_restart_without_the_card_number(
    start_stack: StartStack, tmp_path: Path
) -> None:
    db = tmp_path / "kept.db"
    env = {"payments": {**NO_TRACING, "PAYMENTS_DB_PATH": str(db)}}
    first = start_stack(["payments"], env=env)["payments"]
    assert first.grpc_target is not None
    async with grpc.aio.insecure_channel(first.grpc_target) as channel:
        stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        charged = await charge(stub, charge_request("key-kept", MASTERCARD))
        assert await resolve(stub, "key-retired") is None
    assert Stack(first.run_dir).stop() == ["payments"]  # SIGTERM, and waits for the exit

    assert MASTERCARD.encode() not in database_bytes(db), "the full card number was stored"

    second = start_stack(["payments"], env=env)["payments"]
    assert second.grpc_target is not None
    async with grpc.aio.insecure_channel(second.grpc_target) as channel:
        stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        got = await stub.GetPayment(pb.GetPaymentRequest(id=charged.id))
        assert got.payment == charged
        # Idempotency outlives the process: the same request is not charged again,
        # a different one under the same key is still refused.
        assert await charge(stub, charge_request("key-kept", MASTERCARD)) == charged
        error = await error_of(stub.Charge(charge_request("key-kept", VISA_OK)))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        # So does a key ResolveCharge retired.
        assert await resolve(stub, "key-kept") == charged
        assert await resolve(stub, "key-retired") is None
        error = await error_of(stub.Charge(charge_request("key-retired")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
