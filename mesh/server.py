"""grpc.aio server bootstrap shared by the Python services.

`build_server` gives a server with the library's health service, server
reflection and the mesh's interceptors; `serve` runs it until SIGTERM or
SIGINT and then shuts down in the order a load balancer needs:

1. health turns NOT_SERVING, so probes and clients stop sending new work;
2. after `drain_s`, the server stops accepting calls;
3. calls in flight get `grace_s` to finish before they are cancelled.

Past `max_concurrent_rpcs` calls in flight, `ConcurrencyLimit` sheds each new
call at once with RESOURCE_EXHAUSTED (health and reflection excepted), so an
overload ends in a clear status instead of a queue that grows until calls
time out.

Beside the port, MESH_HEALTH_PROBE_ADDRESS: a plaintext listener serving only
health, for Kubernetes' gRPC probes (`mesh.health_probe`). Run-time state:
MESH_FAULTS_FILE, a fault file read again whenever it changes (`mesh.faults`),
and MESH_METRICS_ADDRESS, an HTTP listener serving the server's RED metrics to
Prometheus (`mesh.metrics`).
Both need the service's name, which is MESH_SERVICE_IDENTITY, else
OTEL_SERVICE_NAME, else what the service passes to `build_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh import health_probe
from mesh.authz import Authorization
from mesh.certs import CertificateError, service_of
from mesh.config import ConfigError, Env
from mesh.deadlines import DeadlineScope
from mesh.faults import FAULTS_FILE_VARIABLE, FaultFile
from mesh.health_probe import HEALTH_PROBE_ADDRESS_VARIABLE, HealthProbe
from mesh.interceptors import (
    AroundEveryCall,
    FaultConfig,
    FaultInjection,
    ServerInterceptor,
    UnexpectedErrors,
)
from mesh.metrics import METRICS_ADDRESS_VARIABLE, MetricsEndpoint, serve_metrics
from mesh.tls import CertificateReloader, MeshSecurity, server_credentials
from mesh.yamlschema import REPO_ROOT

log = logging.getLogger(__name__)

# The async health servicer's public name is `health.aio` (grpcio-health-checking
# re-exports its private `_async` module there); grpc-stubs does not know it.
HealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]

# The same name and meaning in the Go and TypeScript services: calls one server
# runs at once; 0 turns the limit off.
MAX_CONCURRENT_RPCS_VARIABLE = "GRPC_MAX_CONCURRENT_RPCS"
DEFAULT_MAX_CONCURRENT_RPCS = 1000

# grpc.aio takes calls from gRPC core one at a time on its event loop. A burst
# that arrives faster waits in core's queue of calls not yet taken, and past
# `grpc.server.max_pending_requests` (default 1000; hard limit 3000) core drops
# a growing share of them at random, before any interceptor sees them: their
# clients get a bare CANCELLED (the "5-9% CANCELLED" of a 2,000-call burst).
# With the limit on, each call taken is served or shed at once, so raising
# that queue lets every call of a burst reach `ConcurrencyLimit` and end with
# a clear status; the queue stays bounded, for floods far beyond any burst.
_PENDING_CALLS_SOFT_LIMIT = 20_000
_PENDING_CALLS_HARD_LIMIT = 40_000


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
    # Calls in flight past which new ones are shed (`ConcurrencyLimit`); 0: no limit.
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    # mTLS and authorization (`mesh.tls`); off unless MESH_MTLS says on.
    security: MeshSecurity = field(default_factory=MeshSecurity)
    # The fault file (MESH_FAULTS_FILE), read again when it changes; None: none.
    fault_file: Path | None = None
    # `host:port` of the Prometheus metrics listener (MESH_METRICS_ADDRESS); None: off.
    metrics_address: str | None = None
    # This service's name, for its entries in the fault file and the metrics'
    # service.name; None: the name the service gives `build_server`.
    service: str | None = None
    # `host:port` of the plaintext health-only listener for Kubernetes' gRPC
    # probes (MESH_HEALTH_PROBE_ADDRESS, mesh.health_probe); None: off.
    health_probe_address: str | None = None

    @classmethod
    def from_env(cls, env: Env, default_addr: str) -> ServerConfig:
        security = MeshSecurity.from_env(env)
        return cls(
            listen_addr=env.address("GRPC_LISTEN_ADDR", default_addr),
            grace_s=env.number("SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0),
            drain_s=env.number("SHUTDOWN_DRAIN_SECONDS", 0.5, minimum=0.0),
            faults=FaultConfig.from_env(env),
            max_connection_age_s=env.number("GRPC_MAX_CONNECTION_AGE_SECONDS", 0.0, minimum=0.0),
            max_concurrent_rpcs=env.integer(
                MAX_CONCURRENT_RPCS_VARIABLE, DEFAULT_MAX_CONCURRENT_RPCS, minimum=0
            ),
            security=security,
            fault_file=_fault_file(env),
            metrics_address=(
                env.address(METRICS_ADDRESS_VARIABLE)
                if env.optional(METRICS_ADDRESS_VARIABLE)
                else None
            ),
            service=security.service or _service_name(env),
            health_probe_address=(
                env.address(HEALTH_PROBE_ADDRESS_VARIABLE)
                if env.optional(HEALTH_PROBE_ADDRESS_VARIABLE)
                else None
            ),
        )


def _fault_file(env: Env) -> Path | None:
    """MESH_FAULTS_FILE, relative to the repository root as the mesh's other files."""
    raw = env.optional(FAULTS_FILE_VARIABLE)
    if raw is None:
        return None
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


def _service_name(env: Env) -> str | None:
    """MESH_SERVICE_IDENTITY (a name or its SPIFFE ID), else OTEL_SERVICE_NAME."""
    raw = env.optional("MESH_SERVICE_IDENTITY")
    if raw is None:
        return env.optional("OTEL_SERVICE_NAME")
    if not raw.startswith("spiffe://"):
        return raw
    try:
        return service_of(raw)
    except CertificateError as error:
        raise ConfigError(f"MESH_SERVICE_IDENTITY: {error}") from None


class ConcurrencyLimit(AroundEveryCall):
    """Sheds calls past `limit` in flight with RESOURCE_EXHAUSTED, at once.

    Counts calls of all four shapes from the start of the handler to its end
    (a server stream holds its place while it streams). Health and reflection
    are neither counted nor shed: a probe must reach a busy server and hear
    that it is up. grpc.aio's own `maximum_concurrent_rpcs` sheds health checks
    too, and its message ("Concurrent RPC limit exceeded!") names no limit.
    One event loop runs every handler, so the count needs no lock.
    """

    skip_infrastructure = True  # a probe must reach a busy server

    # A shed call is not logged each time (an overload would flood the log):
    # one WARNING line at most this often, with the count since the last one.
    LOG_INTERVAL_S = 10.0

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError(f"a concurrency limit is at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.shed = 0  # calls refused since start
        self._clock = clock
        self._logged_at: float | None = None
        self._logged_shed = 0
        self.message = (
            f"server busy: {limit} calls in flight, the limit ({MAX_CONCURRENT_RPCS_VARIABLE})"
        )

    def _log_shed(self, method: str) -> None:
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self.LOG_INTERVAL_S:
            return
        log.warning(
            "shedding calls past %s=%d in flight: %d shed since the last such line (latest %s)",
            MAX_CONCURRENT_RPCS_VARIABLE,
            self.limit,
            self.shed - self._logged_shed,
            method,
        )
        self._logged_at, self._logged_shed = now, self.shed

    @contextlib.asynccontextmanager
    async def around(self, method: str, context: Any) -> AsyncIterator[None]:
        if self.in_flight >= self.limit:
            self.shed += 1
            self._log_shed(method)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.message)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


@dataclass
class MeshServer:
    """A started-or-not server and what `serve` needs to stop it well."""

    server: grpc.aio.Server
    health: Any  # a HealthServicer
    service_names: tuple[str, ...]
    port: int
    # Set when the port serves mTLS: reloads the certificate on each handshake.
    certificates: CertificateReloader | None = None
    # Set when `max_concurrent_rpcs` is on: its counts of calls in flight and shed.
    limit: ConcurrencyLimit | None = None
    # Set when MESH_METRICS_ADDRESS is: the listener (its `port`) that `shut_down` stops.
    metrics: MetricsEndpoint | None = None
    # Set when MESH_FAULTS_FILE is.
    fault_file: FaultFile | None = None
    # Set when MESH_HEALTH_PROBE_ADDRESS is: the health-only listener.
    probe: HealthProbe | None = None


def build_server(
    config: ServerConfig,
    service_names: Sequence[str],
    interceptors: Sequence[ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
    *,
    public: bool = False,
    public_credentials: grpc.ServerCredentials | None = None,
    service: str | None = None,
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

    With `config.max_concurrent_rpcs` on, `ConcurrencyLimit` comes right after
    `interceptors`: a shed call still has its server span, and skips
    authorization, faults and the servicer.

    `service` names the service (`catalog`) when neither MESH_SERVICE_IDENTITY
    nor OTEL_SERVICE_NAME does (`config.service`). With
    `config.metrics_address`, the metrics listener starts here and its
    interceptor comes first, so a call's duration covers everything after it.
    """
    security = config.security
    secure = security.enabled and not public
    name = config.service or security.service or service
    fault_file = None
    if config.fault_file is not None:
        if name is None:
            raise ConfigError(
                f"{FAULTS_FILE_VARIABLE} needs this service's name: set OTEL_SERVICE_NAME "
                "or MESH_SERVICE_IDENTITY"
            )
        fault_file = FaultFile(config.fault_file, name)
    metrics = serve_metrics(config.metrics_address, name or "unknown_service")
    first = [] if metrics is None else [metrics.metrics.server_interceptor()]
    # The call's deadline, for the clients that propagate it (mesh.deadlines).
    chain: list[ServerInterceptor] = [*first, *interceptors, DeadlineScope()]
    limit = None
    if config.max_concurrent_rpcs > 0:
        limit = ConcurrencyLimit(config.max_concurrent_rpcs)
        chain.append(limit)
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
    if config.faults.enabled or fault_file is not None:
        chain.append(FaultInjection(config.faults, file=fault_file))
    # SO_REUSEPORT off: a second process on a busy port must fail to start,
    # not silently share the traffic with whatever holds the port.
    server_options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
    if config.max_connection_age_s > 0:
        age_ms = max(1, round(config.max_connection_age_s * 1000))
        server_options.append(("grpc.max_connection_age_ms", age_ms))
    if limit is not None:
        server_options += [
            ("grpc.server.max_pending_requests", _PENDING_CALLS_SOFT_LIMIT),
            ("grpc.server.max_pending_requests_hard_limit", _PENDING_CALLS_HARD_LIMIT),
        ]
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
        if metrics is not None:
            metrics.close()
        raise OSError(f"cannot listen on {config.listen_addr}: {error}") from None
    probe = None
    if config.health_probe_address is not None:
        try:
            probe = health_probe.bind(config.health_probe_address, health_servicer)
        except OSError:
            if metrics is not None:
                metrics.close()
            raise
    return MeshServer(
        server=server,
        health=health_servicer,
        service_names=names,
        port=port,
        certificates=reloader,
        limit=limit,
        metrics=metrics,
        fault_file=fault_file,
        probe=probe,
    )


async def start(mesh: MeshServer) -> None:
    """Starts serving and reports SERVING for the server and each service."""
    await mesh.server.start()
    if mesh.probe is not None:
        await mesh.probe.server.start()
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
    if mesh.probe is not None:  # NOT_SERVING until the main port has stopped
        await mesh.probe.server.stop(0)
    if mesh.metrics is not None:
        # Its HTTP server takes up to half a second to stop: not on the loop.
        await asyncio.to_thread(mesh.metrics.close)


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
