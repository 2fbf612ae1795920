"""grpc.aio server bootstrap shared by the Python services.

`build_server` gives a server with the library's health service, server
reflection and the mesh's interceptors; `serve` runs it until SIGTERM or
SIGINT and then shuts down in the order a load balancer needs:

1. health turns NOT_SERVING, so probes and clients stop sending new work;
2. after `drain_s`, the server stops accepting calls;
3. calls in flight get `grace_s` to finish before they are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh.authz import Authorization
from mesh.config import Env
from mesh.interceptors import FaultConfig, FaultInjection, ServerInterceptor, UnexpectedErrors
from mesh.tls import CertificateReloader, MeshSecurity, server_credentials

log = logging.getLogger(__name__)

# The async health servicer's public name is `health.aio` (grpcio-health-checking
# re-exports its private `_async` module there); grpc-stubs does not know it.
HealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ServerConfig:
    """How a service listens and shuts down."""

    listen_addr: str
    grace_s: float
    drain_s: float
    faults: FaultConfig
    # 0: connections live as long as clients keep them. Otherwise the server
    # closes each connection (GOAWAY, calls in flight finish) after about this
    # long, so a client that resolves this service by DNS resolves it again
    # and spreads its calls over replicas added since it connected.
    max_connection_age_s: float = 0.0
    # mTLS and authorization (`mesh.tls`); off unless MESH_MTLS says on.
    security: MeshSecurity = field(default_factory=MeshSecurity)

    @classmethod
    def from_env(cls, env: Env, default_addr: str) -> ServerConfig:
        return cls(
            listen_addr=env.address("GRPC_LISTEN_ADDR", default_addr),
            grace_s=env.number("SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0),
            drain_s=env.number("SHUTDOWN_DRAIN_SECONDS", 0.5, minimum=0.0),
            faults=FaultConfig.from_env(env),
            max_connection_age_s=env.number("GRPC_MAX_CONNECTION_AGE_SECONDS", 0.0, minimum=0.0),
            security=MeshSecurity.from_env(env),
        )


@dataclass
class MeshServer:
    """A started-or-not server and what `serve` needs to stop it well."""

    server: grpc.aio.Server
    health: Any  # a HealthServicer
    service_names: tuple[str, ...]
    port: int
    # Set when the port serves mTLS: reloads the certificate on each handshake.
    certificates: CertificateReloader | None = None


def build_server(
    config: ServerConfig,
    service_names: Sequence[str],
    interceptors: Sequence[ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
    *,
    public: bool = False,
    public_credentials: grpc.ServerCredentials | None = None,
) -> MeshServer:
    """Creates the server and binds its port; the caller adds its servicers.

    `interceptors` run outermost first (tracing goes here, so injected faults
    and mapped errors are inside the server span). `options` are extra gRPC
    channel arguments (the gateway's message size limits, say).

    With `config.security` on, the port requires mTLS and every call passes
    `mesh.authz.Authorization` (inside the server span, before faults);
    `public=True` (the gateway's listener, not a mesh hop) keeps it out of the
    mesh either way: unchecked, and plaintext unless `public_credentials`
    (TLS with the gateway's public certificate) are given.
    """
    security = config.security
    secure = security.enabled and not public
    chain: list[ServerInterceptor] = [*interceptors]
    if secure:
        policy, service = security.policy, security.service
        if policy is None or service is None:
            raise ValueError(
                "mTLS on needs a policy and a service (MeshSecurity.from_env sets both)"
            )
        chain.append(Authorization(policy, service))
    chain.append(UnexpectedErrors())
    if config.faults.enabled:
        log.warning("fault injection on: %s", config.faults)
        chain.append(FaultInjection(config.faults))
    # SO_REUSEPORT off: a second process on a busy port must fail to start,
    # not silently share the traffic with whatever holds the port.
    server_options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
    if config.max_connection_age_s > 0:
        age_ms = max(1, round(config.max_connection_age_s * 1000))
        server_options.append(("grpc.max_connection_age_ms", age_ms))
    server = grpc.aio.server(interceptors=chain, options=[*server_options, *options])
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    reloader = None
    try:
        if secure:
            credentials, reloader = server_credentials(security)
            port = server.add_secure_port(config.listen_addr, credentials)
        elif public and public_credentials is not None:
            port = server.add_secure_port(config.listen_addr, public_credentials)
        else:
            port = server.add_insecure_port(config.listen_addr)
    except RuntimeError as error:  # grpcio's way of saying the bind failed
        raise OSError(f"cannot listen on {config.listen_addr}: {error}") from None
    return MeshServer(
        server=server,
        health=health_servicer,
        service_names=names,
        port=port,
        certificates=reloader,
    )


async def start(mesh: MeshServer) -> None:
    """Starts serving and reports SERVING for the server and each service."""
    await mesh.server.start()
    for name in ("", *mesh.service_names):
        await mesh.health.set(name, health_pb2.HealthCheckResponse.SERVING)


async def shut_down(
    mesh: MeshServer, config: ServerConfig, on_shutdown: Callable[[], None] | None = None
) -> None:
    """`on_shutdown` runs once health is NOT_SERVING, before the drain: a service
    ends there what would otherwise hold the grace period (open streams)."""
    await mesh.health.enter_graceful_shutdown()
    if on_shutdown is not None:
        on_shutdown()
    if config.drain_s:
        await asyncio.sleep(config.drain_s)
    await mesh.server.stop(config.grace_s)


async def serve(
    mesh: MeshServer, config: ServerConfig, on_shutdown: Callable[[], None] | None = None
) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully (see `shut_down`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await start(mesh)
    log.info("serving on port %d", mesh.port)
    await stop.wait()
    log.info("shutting down: drain %.1fs, grace %.1fs", config.drain_s, config.grace_s)
    await shut_down(mesh, config, on_shutdown)
    log.info("stopped")
