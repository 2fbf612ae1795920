"""InventoryService over real gRPC against the real Go process (`make build`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from localmode.processes import Stack
from localmode.topology import REPO_ROOT, LocalService
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc
from tests.contract.grpc_checks import (
    NO_TRACING,
    assert_invalid_field,
    assert_serving,
    assert_sigterm_drains,
)

if TYPE_CHECKING:  # the async stub class exists only in the type stubs
    Stub = inventory_pb2_grpc.InventoryServiceAsyncStub

StartStack = Callable[..., dict[str, LocalService]]
SERVICE = "shop.inventory.v1.InventoryService"
TEN_UNITS = "prod-teapot-cast-iron"  # seeded with exactly 10 units
SCARCE = "prod-espresso-machine"  # seeded with 2: the demo's out-of-stock product
RESERVED = pb.RESERVATION_STATUS_RESERVED
COMMITTED = pb.RESERVATION_STATUS_COMMITTED
RELEASED = pb.RESERVATION_STATUS_RELEASED


@pytest.fixture
def inventory(start_stack: StartStack) -> LocalService:
    return start_stack(["inventory"], env={"inventory": NO_TRACING})["inventory"]


@pytest.fixture
async def stub(inventory: LocalService) -> AsyncIterator[Stub]:
    assert inventory.grpc_target is not None
    async with grpc.aio.insecure_channel(inventory.grpc_target) as channel:
        yield inventory_pb2_grpc.InventoryServiceStub(channel)


def line(product_id: str, quantity: int) -> pb.ReservationLine:
    return pb.ReservationLine(product_id=product_id, quantity=quantity)


async def stock(stub: Stub, product_id: str) -> tuple[int, int]:
    reply = await stub.GetStock(pb.GetStockRequest(product_ids=[product_id]))
    level = reply.stock_levels[0]
    return level.available, level.reserved


async def reserve(stub: Stub, order_id: str, *lines: pb.ReservationLine) -> pb.Reservation:
    reply = await stub.ReserveStock(pb.ReserveStockRequest(order_id=order_id, lines=lines))
    return reply.reservation


async def error_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def test_seed_covers_every_catalog_product() -> None:
    """The two services share no data, only product ids: every product is stocked."""
    catalog = json.loads((REPO_ROOT / "services/catalog/catalog/seed_products.json").read_text())
    seed = json.loads((REPO_ROOT / "services/inventory/internal/stock/seed_stock.json").read_text())
    assert sorted(entry["product_id"] for entry in seed) == sorted(p["id"] for p in catalog)
    assert any(1 <= entry["available"] <= 3 for entry in seed)


async def test_get_stock_in_request_order(stub: Stub) -> None:
    reply = await stub.GetStock(pb.GetStockRequest(product_ids=[TEN_UNITS, SCARCE, TEN_UNITS]))
    assert [(s.product_id, s.available, s.reserved) for s in reply.stock_levels] == [
        (TEN_UNITS, 10, 0),
        (SCARCE, 2, 0),
        (TEN_UNITS, 10, 0),
    ]


async def test_unknown_product_is_not_found(stub: Stub) -> None:
    error = await error_of(stub.GetStock(pb.GetStockRequest(product_ids=["prod-chemex", "nope"])))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (error.details() or "")
    before = await stock(stub, "prod-chemex")
    error = await error_of(reserve(stub, "order-1", line("prod-chemex", 1), line("nope", 1)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (error.details() or "")
    assert await stock(stub, "prod-chemex") == before  # nothing reserved


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    [
        ("GetStock", pb.GetStockRequest(), "product_ids"),
        ("GetStock", pb.GetStockRequest(product_ids=["prod-chemex"] * 101), "product_ids"),
        ("GetStock", pb.GetStockRequest(product_ids=["prod-chemex", ""]), "product_ids[1]"),
        ("ReserveStock", pb.ReserveStockRequest(lines=[line("prod-chemex", 1)]), "order_id"),
        ("ReserveStock", pb.ReserveStockRequest(order_id="o"), "lines"),
        (
            "ReserveStock",
            pb.ReserveStockRequest(order_id="o", lines=[line("", 1)]),
            "lines[0].product_id",
        ),
        (
            "ReserveStock",
            pb.ReserveStockRequest(order_id="o", lines=[line("prod-chemex", 0)]),
            "lines[0].quantity",
        ),
        (
            "ReserveStock",
            pb.ReserveStockRequest(order_id="o", lines=[line("prod-chemex", 1), line(SCARCE, -2)]),
            "lines[1].quantity",
        ),
        (
            "ReserveStock",
            pb.ReserveStockRequest(
                order_id="o", lines=[line("prod-chemex", 1), line("prod-chemex", 1)]
            ),
            "lines[1].product_id",
        ),
        ("CommitStock", pb.CommitStockRequest(), "order_id"),
        ("ReleaseStock", pb.ReleaseStockRequest(), "order_id"),
    ],
)
async def test_invalid_argument_names_the_field(
    stub: Stub, rpc: str, request_: Any, field: str
) -> None:
    assert_invalid_field(await error_of(getattr(stub, rpc)(request_)), field)


async def test_too_little_stock_reserves_nothing(stub: Stub) -> None:
    before = await stock(stub, "prod-chemex")
    error = await error_of(reserve(stub, "order-big", line("prod-chemex", 1), line(SCARCE, 3)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert SCARCE in (error.details() or "")
    assert await stock(stub, "prod-chemex") == before  # all or nothing
    assert await stock(stub, SCARCE) == (2, 0)
    # Nothing was recorded for the order either: committing it finds nothing.
    error = await error_of(stub.CommitStock(pb.CommitStockRequest(order_id="order-big")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_reserve_is_idempotent_by_order_id(stub: Stub) -> None:
    first = await reserve(stub, "order-7", line(TEN_UNITS, 2), line(SCARCE, 1))
    assert first.status == RESERVED
    again = await reserve(stub, "order-7", line(SCARCE, 1), line(TEN_UNITS, 2))  # other order
    assert again.status == RESERVED
    assert sorted((x.product_id, x.quantity) for x in again.lines) == [(SCARCE, 1), (TEN_UNITS, 2)]
    assert await stock(stub, TEN_UNITS) == (8, 2)  # reserved once
    error = await error_of(reserve(stub, "order-7", line(TEN_UNITS, 3)))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await stock(stub, TEN_UNITS) == (8, 2)


async def test_reserve_commit_life_cycle(stub: Stub) -> None:
    await reserve(stub, "order-c", line(TEN_UNITS, 3))
    assert await stock(stub, TEN_UNITS) == (7, 3)
    committed = await stub.CommitStock(pb.CommitStockRequest(order_id="order-c"))
    assert committed.reservation.status == COMMITTED
    assert committed.reservation.order_id == "order-c"
    assert await stock(stub, TEN_UNITS) == (7, 0)  # the units left stock for good
    again = await stub.CommitStock(pb.CommitStockRequest(order_id="order-c"))
    assert again.reservation.status == COMMITTED
    assert await stock(stub, TEN_UNITS) == (7, 0)
    error = await error_of(stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-c")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await stock(stub, TEN_UNITS) == (7, 0)
    # A repeated reserve of a committed order returns it and books nothing.
    repeated = await reserve(stub, "order-c", line(TEN_UNITS, 3))
    assert repeated.status == COMMITTED
    assert await stock(stub, TEN_UNITS) == (7, 0)


async def test_reserve_release_life_cycle(stub: Stub) -> None:
    await reserve(stub, "order-r", line(TEN_UNITS, 4))
    released = await stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-r"))
    assert released.reservation.status == RELEASED
    assert await stock(stub, TEN_UNITS) == (10, 0)
    again = await stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-r"))
    assert again.reservation.status == RELEASED
    assert await stock(stub, TEN_UNITS) == (10, 0)  # released once
    error = await error_of(stub.CommitStock(pb.CommitStockRequest(order_id="order-r")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    repeated = await reserve(stub, "order-r", line(TEN_UNITS, 4))
    assert repeated.status == RELEASED
    assert await stock(stub, TEN_UNITS) == (10, 0)


async def test_release_without_reservation_succeeds_and_records_nothing(stub: Stub) -> None:
    reply = await stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-none"))
    assert not reply.HasField("reservation")
    error = await error_of(stub.CommitStock(pb.CommitStockRequest(order_id="order-none")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "order-none" in (error.details() or "")
    reserved = await reserve(stub, "order-none", line(TEN_UNITS, 1))  # still free to use
    assert reserved.status == RESERVED


async def test_concurrent_reservations_never_oversell(stub: Stub) -> None:
    calls = [reserve(stub, f"order-{i}", line(TEN_UNITS, 1)) for i in range(50)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    won = [r for r in results if isinstance(r, pb.Reservation)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 10
    assert len(lost) == 40
    assert {error.code() for error in lost} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert await stock(stub, TEN_UNITS) == (0, 10)


async def test_concurrent_retries_of_one_order_reserve_once(stub: Stub) -> None:
    calls = [reserve(stub, "order-retried", line(TEN_UNITS, 3)) for _ in range(20)]
    results = await asyncio.gather(*calls)
    assert {r.status for r in results} == {RESERVED}
    assert await stock(stub, TEN_UNITS) == (7, 3)


async def test_reports_serving(inventory: LocalService) -> None:
    assert inventory.grpc_target is not None
    await assert_serving(inventory.grpc_target, SERVICE)


async def test_sigterm_drains_and_finishes_in_flight_calls(start_stack: StartStack) -> None:
    async def slow_call(channel: grpc.aio.Channel) -> pb.GetStockResponse:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        return await stub.GetStock(pb.GetStockRequest(product_ids=[TEN_UNITS]), timeout=10)

    reply = await assert_sigterm_drains(start_stack, "inventory", slow_call)
    assert reply.stock_levels[0].available == 10


async def test_data_survives_a_restart(start_stack: StartStack, tmp_path: Path) -> None:
    env = {"inventory": {**NO_TRACING, "INVENTORY_DB_PATH": str(tmp_path / "inventory.db")}}
    first = start_stack(["inventory"], env=env)["inventory"]
    assert first.grpc_target is not None
    async with grpc.aio.insecure_channel(first.grpc_target) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        await reserve(stub, "order-kept", line(TEN_UNITS, 4))
        await reserve(stub, "order-done", line(SCARCE, 2))
        await stub.CommitStock(pb.CommitStockRequest(order_id="order-done"))
    assert Stack(first.run_dir).stop() == ["inventory"]  # SIGTERM, and waits for the exit

    second = start_stack(["inventory"], env=env)["inventory"]
    assert second.grpc_target is not None
    async with grpc.aio.insecure_channel(second.grpc_target) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        assert await stock(stub, TEN_UNITS) == (6, 4)
        assert await stock(stub, SCARCE) == (0, 0)
        kept = await reserve(stub, "order-kept", line(TEN_UNITS, 4))  # the same reservation
        assert kept.status == RESERVED
        assert await stock(stub, TEN_UNITS) == (6, 4)
        error = await error_of(reserve(stub, "order-new", line(SCARCE, 1)))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
