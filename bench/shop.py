"""The shop behind its gateway, as `make up` runs it, for calls a shopper would make.

`resolve_shop` lays out NATS, catalog, inventory, payments, orders,
notifications and the gateway on free loopback ports (and Jaeger, unless the
shop is untraced or shares a Jaeger started elsewhere), with a name prefix so
that two shops run side by side in one Stack: one traced, one with
OTEL_SDK_DISABLED=true everywhere. MESH_MTLS is off (bench/mtls.md measures
it) and the gateway's rate limit is off: the bench is one client sending as
fast as it can, which its per-caller token bucket (100 per second, burst 200)
would refuse. A JWT for one bench customer, minted with the gateway's own key,
authenticates the orders route.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from bench.checkout import order_request
from bench.load import Call, Metadata
from bench.stock import StockPool
from gateway.auth import mint_token
from gateway.config import AuthConfig
from localmode.processes import Stack, free_port, start_all
from localmode.topology import LocalService, Topology
from mesh.config import Env
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

__all__ = [
    "GATEWAY_ENV",
    "SHOP",
    "UNTRACED",
    "NotConfirmed",
    "Shop",
    "place_order",
    "resolve_shop",
    "start_shop",
]

SHOP = ("nats", "catalog", "inventory", "payments", "orders", "notifications", "gateway")
GATEWAY_ENV = {"GATEWAY_RATE_PER_SECOND": "0"}
UNTRACED = {"OTEL_SDK_DISABLED": "true"}
TOKEN_TTL_S = 3600  # longer than any part of the bench


class NotConfirmed(RuntimeError):
    """A bench order came back CANCELLED: its figure would be another saga's."""


@dataclass(frozen=True)
class Shop:
    gateway: str  # the gateway's plaintext gRPC target
    inventory: str  # inventory's, to read its stock
    catalog: str  # catalog's, for the anchor
    customer: str
    token: Metadata  # authorization as `customer`


def resolve_shop(
    run_dir: Path,
    prefix: str = "",
    traced: bool = True,
    jaeger_ports: Mapping[tuple[str, int], int] | None = None,
) -> tuple[list[LocalService], Shop]:
    """The shop's processes, named `prefix` + service, each with its data under `run_dir`.

    A traced shop exports to its own Jaeger, or to the one on `jaeger_ports`
    (a port map of another resolve) when given.
    """
    topology = Topology.load(replicas={"catalog": 1})
    ports = {key: free_port() for key in topology.default_ports()}
    names = list(SHOP)
    if jaeger_ports is not None:
        ports.update({key: port for key, port in jaeger_ports.items() if key[0] == "jaeger"})
    elif traced:
        names.insert(0, "jaeger")
    extra = {"MESH_MTLS": "off", **({} if traced else UNTRACED)}
    services = []
    for name in names:
        service = topology.resolve(name, ports, run_dir)
        environment = {**service.environment, **extra}
        if name == "gateway":
            environment.update(GATEWAY_ENV)
        services.append(replace(service, name=prefix + name, environment=environment))
    by_name = {s.name: s for s in services}
    gateway = by_name[prefix + "gateway"]
    customer = f"cus-bench-{uuid.uuid4().hex[:6]}"
    auth = AuthConfig.from_env(Env({**os.environ, **gateway.environment}))
    token = (("authorization", f"Bearer {mint_token(auth, customer, TOKEN_TTL_S)}"),)
    shop = Shop(
        gateway=str(gateway.grpc_target),
        inventory=str(by_name[prefix + "inventory"].grpc_target),
        catalog=str(by_name[prefix + "catalog"].grpc_target),
        customer=customer,
        token=token,
    )
    return services, shop


def start_shop(
    stack: Stack,
    run_dir: Path,
    prefix: str = "",
    traced: bool = True,
    jaeger_ports: Mapping[tuple[str, int], int] | None = None,
) -> Shop:
    """Starts `resolve_shop`'s processes in `stack`; stops them again if one fails."""
    services, shop = resolve_shop(run_dir, prefix, traced, jaeger_ports)
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    start_all(stack, services)
    return shop


def place_order(
    channel: grpc.aio.Channel, shop: Shop, pool: StockPool, metadata: Metadata = ()
) -> Call:
    """A checkout through the gateway: one unit from `pool`, confirmed or NotConfirmed."""
    stub = orders_pb2_grpc.OrdersServiceStub(channel)
    sent = (*shop.token, *metadata)

    async def call() -> orders_pb2.PlaceOrderResponse:
        request = order_request(shop.customer, pool.take())
        reply: orders_pb2.PlaceOrderResponse = await stub.PlaceOrder(
            request, timeout=30, metadata=sent
        )
        if reply.order.status != orders_pb2.ORDER_STATUS_CONFIRMED:
            raise NotConfirmed(f"order {reply.order.id}: {reply.order.cancel_reason}")
        return reply

    return call
