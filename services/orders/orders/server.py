"""Builds the orders service (gRPC server, store, upstream clients, saga, relay) and runs it.

Start: the server binds, the relay and the resumer start in the background
(NATS and the upstreams may still be down), and sagas left unfinished by a
previous process resume at once. Shutdown: health NOT_SERVING, drain, stop
the server (PlaceOrder calls in flight get the grace period), then stop the
sagas still running (each resumes from its persisted step next time), the
relay, the channels, and last the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace

from mesh.channels import Channels, Stubs
from mesh.interceptors import ServerInterceptor
from mesh.paging import PageTokens
from mesh.server import MeshServer, ServerConfig, build_server, shut_down, start
from mesh.server import serve as mesh_serve
from orders import SERVICE_NAME
from orders.checkout import Orders
from orders.config import OrdersConfig
from orders.domain import utcnow
from orders.relay import OutboxRelay
from orders.saga import Saga, SagaPolicy
from orders.servicer import OrdersServicer
from orders.store import SqliteOrderStore
from orders.upstreams import GrpcCatalog, GrpcInventory, GrpcPayments
from shop.catalog.v1.catalog_pb2_grpc import CatalogServiceStub as CatalogStub
from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceStub as InventoryStub
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1.payments_pb2_grpc import PaymentsServiceStub as PaymentsStub

log = logging.getLogger(__name__)

SERVICE_FULL_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrdersService"].full_name


@dataclass
class OrdersServer:
    mesh: MeshServer
    store: SqliteOrderStore
    orders: Orders
    relay: OutboxRelay
    channels: Channels
    resume_interval_s: float
    _resumer: asyncio.Task[None] | None = field(default=None, init=False)

    def start_background(self) -> None:
        self.relay.start()
        if self._resumer is None:
            self._resumer = asyncio.create_task(self._resume_forever(), name="saga-resumer")

    async def _resume_forever(self) -> None:
        while True:
            try:
                started = await self.orders.resume_in_flight()
            except Exception:  # the store failing here must not end the loop
                log.exception("resuming sagas failed")
            else:
                if started:
                    log.info("resumed %d unfinished saga(s)", started)
            await asyncio.sleep(self.resume_interval_s)

    async def start(self) -> None:
        await start(self.mesh)
        self.start_background()

    async def stop(self, config: ServerConfig) -> None:
        await shut_down(self.mesh, config)
        await self.close()

    async def close(self) -> None:
        resumer, self._resumer = self._resumer, None
        if resumer is not None:
            resumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resumer
        await self.orders.stop()
        await self.relay.stop()
        await self.channels.close()
        await self.store.close()


async def create_server(
    config: OrdersConfig,
    interceptors: Sequence[ServerInterceptor] = (),
    client_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    tracer_provider: trace.TracerProvider | None = None,
) -> OrdersServer:
    """Opens the store and returns a bound, not yet started, server (port 0 picks one)."""
    mesh = build_server(config.server, [SERVICE_FULL_NAME], interceptors, service=SERVICE_NAME)
    store = await SqliteOrderStore.open(config.db_path)
    # Each call to an upstream is bounded by what is left of the client's
    # deadline, retried and broken as the traffic policy says.
    channels = Channels(client_interceptors, traffic=config.traffic)
    timeout = config.upstream_timeout_s
    relay = OutboxRelay(config.nats_url, store, tracer_provider=tracer_provider)
    saga = Saga(
        store,
        GrpcInventory(
            Stubs(channels, config.inventory_target, "inventory", InventoryStub), timeout
        ),
        GrpcPayments(Stubs(channels, config.payments_target, "payments", PaymentsStub), timeout),
        clock=utcnow,
        policy=SagaPolicy(retry_budget_s=config.step_retry_s, pause_after=config.pause_after),
        on_finished=relay.wake,
    )
    orders = Orders(
        store,
        GrpcCatalog(Stubs(channels, config.catalog_target, "catalog", CatalogStub), timeout),
        saga,
        PageTokens(config.page_token_key),
        tracer_provider=tracer_provider,
    )
    orders_pb2_grpc.add_OrdersServiceServicer_to_server(OrdersServicer(orders), mesh.server)
    return OrdersServer(
        mesh=mesh,
        store=store,
        orders=orders,
        relay=relay,
        channels=channels,
        resume_interval_s=config.resume_interval_s,
    )


async def serve(server: OrdersServer, config: ServerConfig) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down in the order above."""
    server.start_background()
    try:
        await mesh_serve(server.mesh, config)
    finally:
        await server.close()
