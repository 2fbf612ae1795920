"""Builds the gateway's gRPC server from its configuration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from gateway import SERVICE_NAME
from gateway.accesslog import AccessLog
from gateway.auth import Authenticator
from gateway.cancellation import capture_interceptors
from gateway.config import GatewayConfig
from gateway.contracts import contract_shapes
from gateway.proxy import Gate, Proxy, ShapeLookup
from gateway.ratelimit import TokenBuckets
from mesh.channels import Channels
from mesh.interceptors import ServerInterceptor
from mesh.server import MeshServer, build_server


@dataclass
class GatewayServer:
    mesh: MeshServer
    channels: Channels  # one per upstream; close them after the server stopped


async def create_server(
    config: GatewayConfig,
    interceptors: Sequence[ServerInterceptor] = (),
    client_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    shapes: ShapeLookup = contract_shapes,
) -> GatewayServer:
    """A bound, not yet started, gateway (port 0 picks one).

    `interceptors` go on the server (tracing: the gateway's server span),
    `client_interceptors` on the upstream channels (tracing: a client span
    per forwarded call, parent of the upstream's server span).
    """
    limit = config.max_message_bytes
    # Both directions, at both ends of the gateway: a larger message is
    # RESOURCE_EXHAUSTED whether the client or the upstream sent it.
    limits = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    services = [route.service for route in config.routes]
    public_credentials = None
    if config.public_tls is not None:
        pair = (config.public_tls.key_pem, config.public_tls.cert_pem)
        public_credentials = grpc.ssl_server_credentials([pair])
    mesh = build_server(
        config.server,
        services,
        interceptors,
        options=limits,
        public=True,
        public_credentials=public_credentials,
        service=SERVICE_NAME,
    )
    upstream_interceptors = list(client_interceptors)
    if upstream_interceptors:
        # Innermost; grpc-stubs type client interceptors only partially.
        upstream_interceptors += capture_interceptors()
    channels = Channels(upstream_interceptors, options=limits, traffic=config.traffic)
    buckets = None
    if config.rate.enabled:
        buckets = TokenBuckets(config.rate.per_second, config.rate.burst)
    gate = Gate(Authenticator(config.auth), buckets, config.default_timeout_s)
    # After health and reflection (added by build_server), whose handlers answer first.
    access_log = AccessLog(config.access_log)
    proxy = Proxy(config.routes, channels, gate, access_log, shapes, bool(upstream_interceptors))
    mesh.server.add_generic_rpc_handlers((proxy,))
    return GatewayServer(mesh=mesh, channels=channels)
