"""A plaintext listener that serves nothing but grpc.health.v1, for
Kubernetes' native `grpc:` probes (MESH_HEALTH_PROBE_ADDRESS, off unless set).

The kubelet's gRPC probe cannot present a client certificate, and a service's
own port takes only mTLS calls when the mesh is on. This second port answers
health checks from the same servicer as the main port, so it says NOT_SERVING
through the shutdown drain as the main port does; any other method on it is
UNIMPLEMENTED, and it goes through no interceptor (no span, no metric: probes
every few seconds would drown the real calls in both). The Go and TypeScript
services read the same variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

HEALTH_PROBE_ADDRESS_VARIABLE = "MESH_HEALTH_PROBE_ADDRESS"


@dataclass
class HealthProbe:
    server: grpc.aio.Server
    port: int


def bind(address: str, health: Any) -> HealthProbe:
    """A server for `health` (a HealthServicer) bound to `address`, not started."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:  # grpcio's way of saying the bind failed
        message = f"cannot listen on {address} ({HEALTH_PROBE_ADDRESS_VARIABLE}): {error}"
        raise OSError(message) from None
    return HealthProbe(server=server, port=port)
