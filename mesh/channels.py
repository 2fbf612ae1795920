"""One reusable grpc.aio channel per upstream.

A channel multiplexes every call to an upstream over HTTP/2 and keeps its
connections warm; creating one per call would pay a TCP and HTTP/2 handshake
each time. `Channels` hands out the same channel for the same target and
closes them all at shutdown.

With mTLS on (`mesh.tls`), every channel presents this service's certificate
and checks the server's against the service it is meant to reach. gRPC reads
a client certificate once, into the channel's credentials; so that a client
never goes on presenting one that `make certs` has replaced (and that will
expire), `get` looks at the files at most once a second and, when they
changed, hands out new channels with the new certificate from then on,
closing the old ones with a grace period for the calls they carry. Callers
therefore ask `get` for the channel each time rather than keep one.

Given the traffic policy (`mesh.traffic`), each upstream's channel gets that
upstream's settings: its service config (round_robin, health checking,
retries, retry throttling), its default deadline beneath the incoming
call's (`mesh.deadlines`), and its circuit breaker. With metrics on
(`mesh.metrics`), each channel's calls are counted per callee.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import grpc

from mesh import metrics
from mesh.breaker import BreakerConfig
from mesh.breaker_interceptor import BreakerInterceptor
from mesh.config import ConfigError, Env
from mesh.tls import (
    MeshSecurity,
    channel_credentials,
    channel_options,
    expected_service,
    files_stamp,
)
from mesh.traffic import DEFAULT_SERVICE_CONFIG, TrafficPolicy

log = logging.getLogger(__name__)

# How often `get` looks at the certificate files, and how long a channel
# replaced after a rotation keeps serving the calls it carries.
RENEW_CHECK_S = 1.0
RETIRE_GRACE_S = 30.0


class Channels:
    """A registry of channels keyed by target, e.g. `dns:///inventory:50053`."""

    def __init__(
        self,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        service_config: Mapping[str, Any] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        security: MeshSecurity | None = None,
        breaker: BreakerConfig | None = None,
        traffic: TrafficPolicy | None = None,
    ) -> None:
        """`options` are extra gRPC channel arguments for every channel (message size limits).

        `traffic` gives the channel of each upstream it knows (a target whose
        service is named, see `get`) that upstream's service config, its
        default deadline beneath the incoming call's (mesh.deadlines), and its
        breaker; `service_config` and `breaker` are for the other targets, or
        all of them without `traffic`. `breaker` puts a circuit breaker of that
        configuration on each upstream's channel, after `interceptors` (so a
        refused call still has its client span); one per target, kept when the
        channel is replaced.

        `security` None reads it from the environment (MESH_MTLS and the rest, as
        `ServerConfig.from_env` does), so a service's upstream channels follow
        the same switch as its server.
        """
        self._security = MeshSecurity.from_env(Env()) if security is None else security
        self._credentials = None
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        if self._security.enabled and self._security.service is not None:
            self._stamp = files_stamp(self._security.certs_dir, self._security.service)
            self._credentials = channel_credentials(self._security)
        self._checked_at = time.monotonic()
        self._retired: list[grpc.aio.Channel] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._interceptors = list(interceptors)
        self._service_config = DEFAULT_SERVICE_CONFIG if service_config is None else service_config
        self._options = [("grpc.enable_retries", 1), *options]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._traffic = traffic
        self._breaker = breaker
        self._breakers: dict[str, BreakerInterceptor] = {}

    def breaker(self, target: str) -> BreakerInterceptor | None:
        """The circuit breaker of `target`'s channel, once it has one."""
        return self._breakers.get(target)

    def _settings(
        self, target: str, service: str | None
    ) -> tuple[Mapping[str, Any], list[grpc.aio.ClientInterceptor]]:
        """The service config and interceptors of a new channel to `target`."""
        name = expected_service(target, service)
        upstream = (
            None if self._traffic is None or name is None else self._traffic.upstreams.get(name)
        )
        deadlines: list[grpc.aio.ClientInterceptor] = []
        if upstream is None:
            config, breaker_config, bypass = self._service_config, self._breaker, frozenset[str]()
        else:
            config, deadlines = upstream.service_config(), upstream.deadlines().interceptors()
            breaker_config, bypass = upstream.breaker, upstream.bypassed_methods()
        # Named by service, never by address: a breaker's message reaches clients.
        callee = name or "upstream"
        # The metrics see every outcome, a breaker's refusal included (no-ops
        # while the service exports no metrics).
        interceptors = [*self._interceptors, *deadlines, *metrics.client_interceptors(callee)]
        if breaker_config is not None:
            breaker = self._breakers.get(target)
            if breaker is None:
                breaker = BreakerInterceptor(callee, breaker_config, bypass=bypass)
                self._breakers[target] = breaker
                metrics.watch_breaker(breaker)
            interceptors += breaker.interceptors()
        return config, interceptors

    def get(self, target: str, service: str | None = None) -> grpc.aio.Channel:
        """The channel to `target`; with mTLS on, the server must prove it is
        `service` (default: the target's host, when that is a service name)."""
        self._renew_if_rotated()
        channel = self._channels.get(target)
        if channel is None:
            config, interceptors = self._settings(target, service)
            options = [*self._options, ("grpc.service_config", json.dumps(config))]
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(
                    target, options=options, interceptors=interceptors
                )
            else:
                channel = grpc.aio.secure_channel(
                    target,
                    self._credentials,
                    options=[*options, *channel_options(target, service)],
                    interceptors=interceptors,
                )
            self._channels[target] = channel
        return channel

    def _renew_if_rotated(self) -> None:
        if self._stamp is None or self._security.service is None:
            return
        now = time.monotonic()
        if now - self._checked_at < RENEW_CHECK_S:
            return
        self._checked_at = now
        try:
            stamp = files_stamp(self._security.certs_dir, self._security.service)
            if stamp == self._stamp:
                return
            credentials = channel_credentials(self._security)
        except (OSError, ConfigError) as error:
            # Mid-rotation or gone: keep what works and look again next time.
            log.warning("keeping the current client certificate: %s", error)
            return
        self._stamp, self._credentials = stamp, credentials
        retired, self._channels = list(self._channels.values()), {}
        self._retired += retired
        for channel in retired:
            task = asyncio.get_running_loop().create_task(channel.close(RETIRE_GRACE_S))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        log.info("new client certificate for %s: new channels", self._security.service)

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = [*self._channels.values(), *self._retired], {}
        self._retired = []
        for channel in channels:
            await channel.close(grace)


S = TypeVar("S")


class Stubs(Generic[S]):
    """A stub for `target`'s channel, for a client that calls it all along:
    calling it gives the stub of the channel `Channels.get` gives now, made
    again only when that is a new channel (after a certificate rotation)."""

    def __init__(
        self,
        channels: Channels,
        target: str,
        service: str | None,
        make: Callable[[grpc.aio.Channel], S],
    ) -> None:
        self._channels = channels
        self._target = target
        self._service = service
        self._make = make
        self._channel: grpc.aio.Channel | None = None
        self._stub: S | None = None

    def __call__(self) -> S:
        channel = self._channels.get(self._target, self._service)
        if self._stub is None or channel is not self._channel:
            self._channel, self._stub = channel, self._make(channel)
        return self._stub
