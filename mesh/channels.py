"""One reusable grpc.aio channel per upstream.

A channel multiplexes every call to an upstream over HTTP/2 and keeps its
connections warm; creating one per call would pay a TCP and HTTP/2 handshake
each time. `Channels` hands out the same channel for the same target and
closes them all at shutdown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

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
    ) -> None:
        """`options` are extra gRPC channel arguments for every channel (message size limits)."""
        self._interceptors = list(interceptors)
        config = DEFAULT_SERVICE_CONFIG if service_config is None else service_config
        self._options = [
            ("grpc.service_config", json.dumps(config)),
            ("grpc.enable_retries", 1),
            *options,
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                target, options=self._options, interceptors=self._interceptors
            )
            self._channels[target] = channel
        return channel

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)
