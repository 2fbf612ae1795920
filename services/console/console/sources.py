"""Reading the live mesh: each replica's /metrics and gRPC health, each
address resolved at every poll (replicas come and go)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from console.config import Target


@dataclass(frozen=True)
class Replica:
    """One process of a service, as this poll found it."""

    metrics_address: str
    metrics_text: str | None  # None: no answer
    health: str  # SERVING, NOT_SERVING, UNKNOWN (an answer of another status) or DOWN
    error: str | None
    health_address: str = ""


async def addresses(target: str) -> list[str]:
    """`ipv4:a,b` as given; `host:port` as every address the name resolves to."""
    if target.startswith("ipv4:"):
        return [a for a in target.removeprefix("ipv4:").split(",") if a]
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, int(port), family=socket.AF_INET)
    except (OSError, ValueError):
        return [target]  # reported as unreachable by the probe itself
    return sorted({f"{info[4][0]}:{port}" for info in infos})


class Sources:
    """The HTTP session and gRPC channels the polls reuse."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def forget_except(self, addresses: set[str]) -> None:
        """Closes the channels of replicas that are gone (compose and
        Kubernetes give a replaced one a new address)."""
        for address in set(self._channels) - addresses:
            await self._channels.pop(address).close(None)

    async def replicas(self, target: Target) -> list[Replica]:
        metrics, health = await asyncio.gather(addresses(target.metrics), addresses(target.health))
        if len(health) != len(metrics):  # no way to pair them: check the first
            health = (health * len(metrics))[: len(metrics)]
        return list(
            await asyncio.gather(
                *(self._replica(m, h) for m, h in zip(metrics, health, strict=True))
            )
        )

    async def _replica(self, metrics_address: str, health_address: str) -> Replica:
        (text, error), status = await asyncio.gather(
            self.metrics(metrics_address), self.health(health_address)
        )
        return Replica(metrics_address, text, status, error, health_address)

    async def metrics(self, address: str) -> tuple[str | None, str | None]:
        try:
            async with self.session().get(f"http://{address}/metrics") as response:
                if response.status != 200:
                    return None, f"{address}/metrics answered {response.status}"
                return await response.text(), None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return None, f"{address}/metrics: {type(error).__name__} {error}".strip()

    async def health(self, address: str) -> str:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout_s)
        except grpc.aio.AioRpcError:
            return "DOWN"
        names = {health_pb2.HealthCheckResponse.SERVING: "SERVING"}
        names[health_pb2.HealthCheckResponse.NOT_SERVING] = "NOT_SERVING"
        return names.get(reply.status, "UNKNOWN")
