"""RED metrics across the mesh: after a known number of calls, every service's
Prometheus endpoint holds those counts per method, status code and edge.

The shop runs as deployed (mTLS on, so each server knows its caller) with
its metrics ports; 3 checkouts and 2 lookups of a missing order go through
the gateway. Then, in all three languages:
- each server counts its calls by method, code and verified caller
  (`rpc_server_call_duration_seconds_count{rpc_method, rpc_grpc_status_code,
  mesh_caller}`), the gateway's public port with caller "unknown";
- each Python client counts its calls by callee (`rpc_client_...{mesh_callee}`),
  and both ends of every edge agree.
"""

from __future__ import annotations

import os
import uuid

import grpc
import pytest

from gateway.auth import mint_token
from gateway.config import AuthConfig
from localmode.topology import LocalService
from mesh.config import Env
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from tests.conftest import StartStack
from tests.contract.gateway_support import until
from tests.e2e.checkout_support import order_request
from tests.metrics_scrape import Samples, scrape, values

pytestmark = pytest.mark.e2e

STACK = ["jaeger", "nats", "catalog", "inventory", "payments", "orders", "gateway"]
CHECKOUTS = 3
MISSING = 2
SERVER = "rpc_server_call_duration_seconds_count"
CLIENT = "rpc_client_call_duration_seconds_count"
SHOP = "shop."  # the contracts' calls; health checks and probes aside


def _metrics(service: LocalService) -> Samples:
    return scrape(service.environment["MESH_METRICS_ADDRESS"])


def _served(samples: Samples) -> dict[tuple[str, str, str], float]:
    """(caller, method, code) -> calls, for the shop's own services."""
    keys = ("rpc_service", "mesh_caller", "rpc_method", "rpc_grpc_status_code")
    found = values(samples, SERVER, *keys).items()
    return {(c, m, s): n for (svc, c, m, s), n in found if svc.startswith(SHOP)}


def _made(samples: Samples) -> dict[tuple[str, str, str], float]:
    """(callee, method, code) -> calls."""
    keys = ("rpc_service", "mesh_callee", "rpc_method", "rpc_grpc_status_code")
    found = values(samples, CLIENT, *keys).items()
    return {(c, m, s): n for (svc, c, m, s), n in found if svc.startswith(SHOP)}


async def test_every_service_counts_its_calls_per_method_code_and_edge(
    start_stack: StartStack,
) -> None:
    shop = start_stack(STACK, mtls=True)
    gateway = shop["gateway"]
    auth = AuthConfig.from_env(Env({**os.environ, **gateway.environment}))
    customer = f"cus-metrics-{uuid.uuid4().hex[:8]}"
    token = (("authorization", f"Bearer {mint_token(auth, customer, 600)}"),)
    async with grpc.aio.insecure_channel(str(gateway.grpc_target)) as channel:
        orders = orders_pb2_grpc.OrdersServiceStub(channel)
        for _ in range(CHECKOUTS):
            request = order_request(customer, [("prod-chemex", 1)])
            reply = await orders.PlaceOrder(request, metadata=token, timeout=10)
            assert reply.order.status == orders_pb2.ORDER_STATUS_CONFIRMED
        for _ in range(MISSING):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await orders.GetOrder(
                    orders_pb2.GetOrderRequest(id="ord-missing"), metadata=token, timeout=10
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    ok, not_found = "OK", "NOT_FOUND"
    # A server records a call once its status is sent, which may be just
    # after its client has the answer: wait until the last one is in.
    expected = {
        "gateway": {  # the public port: the shopper has no mesh identity
            ("unknown", "PlaceOrder", ok): CHECKOUTS,
            ("unknown", "GetOrder", not_found): MISSING,
        },
        "orders": {
            ("gateway", "PlaceOrder", ok): CHECKOUTS,
            ("gateway", "GetOrder", not_found): MISSING,
        },
    }
    for name, counts in expected.items():
        await until(lambda: _served(_metrics(shop[name])) == counts)  # noqa: B023
    at = {name: _metrics(shop[name]) for name in ("gateway", "orders", "inventory", "payments")}
    at["catalog"] = _metrics(shop["catalog"])
    made_by_orders = _made(at["orders"])
    for callee, method in (
        ("inventory", "ReserveStock"),
        ("inventory", "CommitStock"),
        ("payments", "Charge"),
    ):
        assert made_by_orders[(callee, method, ok)] == CHECKOUTS, made_by_orders
    # Both ends of every edge agree, in Go (inventory) and TypeScript (payments) too.
    for edge_caller, edge_callee in (
        ("gateway", "orders"),
        ("orders", "inventory"),
        ("orders", "payments"),
        ("orders", "catalog"),
    ):
        made = {
            (method, code): n
            for (callee, method, code), n in _made(at[edge_caller]).items()
            if callee == edge_callee
        }
        served = {
            (method, code): n
            for (caller, method, code), n in _served(at[edge_callee]).items()
            if caller == edge_caller
        }
        assert made, (edge_caller, edge_callee)
        assert made == served, (edge_caller, edge_callee, made, served)
