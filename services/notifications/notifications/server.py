"""Builds the notifications service (gRPC server, store, consumer) and runs it.

The order of shutdown matters to streaming clients: health turns NOT_SERVING
and every open StreamNotifications ends with UNAVAILABLE at once (a stream
has no natural end, so waiting for it would only burn the grace period);
then unary calls drain, the server stops, and the consumer lets go of NATS
before the database closes, so no message is acked for a write that failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace

from mesh.interceptors import ServerInterceptor
from mesh.paging import PageTokens
from mesh.server import MeshServer, ServerConfig, build_server, shut_down, start
from mesh.server import serve as mesh_serve
from notifications import SERVICE_NAME
from notifications.broadcast import Broadcaster
from notifications.config import NotificationsConfig
from notifications.consumer import OrderEventsConsumer
from notifications.domain import Notifications
from notifications.servicer import NotificationsServicer
from notifications.store import SqliteNotificationStore
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc

SERVICE_FULL_NAME = notifications_pb2.DESCRIPTOR.services_by_name["NotificationsService"].full_name


@dataclass
class NotificationsServer:
    mesh: MeshServer
    store: SqliteNotificationStore
    notifications: Notifications
    consumer: OrderEventsConsumer

    async def start(self) -> None:
        """Serves gRPC and starts consuming in the background (NATS may be down)."""
        await start(self.mesh)
        self.consumer.start()

    async def stop(self, config: ServerConfig) -> None:
        await shut_down(self.mesh, config, on_shutdown=self.notifications.broadcaster.close)
        await self.close()

    async def close(self) -> None:
        """Lets go of NATS, then of the database: no ack for a write that failed."""
        await self.consumer.stop()
        await self.store.close()


async def create_server(
    config: NotificationsConfig,
    interceptors: Sequence[ServerInterceptor] = (),
    tracer_provider: trace.TracerProvider | None = None,
) -> NotificationsServer:
    """Opens the store and returns a bound, not yet started, server (port 0 picks one)."""
    mesh = build_server(config.server, [SERVICE_FULL_NAME], interceptors, service=SERVICE_NAME)
    store = await SqliteNotificationStore.open(config.db_path)
    notifications = Notifications(store, PageTokens(config.page_token_key), Broadcaster())
    notifications_pb2_grpc.add_NotificationsServiceServicer_to_server(
        NotificationsServicer(notifications), mesh.server
    )
    consumer = OrderEventsConsumer(
        config.nats_url,
        notifications,
        config.ack_wait_s,
        tracer_provider=tracer_provider,
        skip_ack=config.skip_ack,
        metrics=None if mesh.metrics is None else mesh.metrics.metrics,
    )
    return NotificationsServer(
        mesh=mesh, store=store, notifications=notifications, consumer=consumer
    )


async def serve(server: NotificationsServer, config: ServerConfig) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down in the order above."""
    server.consumer.start()  # in the background: NATS may be down
    try:
        await mesh_serve(server.mesh, config, on_shutdown=server.notifications.broadcaster.close)
    finally:
        await server.close()
