"""One reusable grpc.aio channel per upstream.

A channel multiplexes every call to an upstream over HTTP/2 and keeps its
connections warm; creating one per call would pay a TCP and HTTP/2 handshake
each time. `Channels` hands out the same channel for the same target and
closes them all at shutdown.

With mTLS on (`mesh.tls`), every channel presents this service's certificate
and checks the server's against the service it is meant to reach.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from mesh.config import Env
from mesh.tls import MeshSecurity, channel_credentials, channel_options

# round_robin spreads calls over every address a name resolves to (replicas
# in DNS or a comma list), and client-side health checking skips replicas
# that report NOT_SERVING, such as one that is draining.
DEFAULT_SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
}


class Channels:
    """A registry of channels keyed by target, e.g. `dns:///inventory:50053`."""

    def __init__(
        self,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        service_config: dict[str, Any] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        security: MeshSecurity | None = None,
    ) -> None:
        """`options` are extra gRPC channel arguments for every channel (message size limits).

        `security` None reads it from the environment (MESH_MTLS and the rest, as
        `ServerConfig.from_env` does), so a service's upstream channels follow
        the same switch as its server.
        """
        self._security = MeshSecurity.from_env(Env()) if security is None else security
        self._credentials = channel_credentials(self._security) if self._security.enabled else None
        self._interceptors = list(interceptors)
        config = DEFAULT_SERVICE_CONFIG if service_config is None else service_config
        self._options = [
            ("grpc.service_config", json.dumps(config)),
            ("grpc.enable_retries", 1),
            *options,
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, target: str, service: str | None = None) -> grpc.aio.Channel:
        """The channel to `target`; with mTLS on, the server must prove it is
        `service` (default: the target's host, when that is a service name)."""
        channel = self._channels.get(target)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(
                    target, options=self._options, interceptors=self._interceptors
                )
            else:
                channel = grpc.aio.secure_channel(
                    target,
                    self._credentials,
                    options=[*self._options, *channel_options(target, service)],
                    interceptors=self._interceptors,
                )
            self._channels[target] = channel
        return channel

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)
