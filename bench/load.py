"""How every call table of `make bench` drives load: one client, calls timed on the client.

A round opens a channel to its target, makes one call outside the clock (the
connection), then runs `calls` calls with `concurrency` of them in flight and
times each one. `interleave` warms every target up, then goes over the targets
in turn `rounds` times, so that machine noise hits all of them alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

__all__ = [
    "WARM_UP_CALLS",
    "Call",
    "Endpoint",
    "Metadata",
    "Prepare",
    "Sample",
    "get_product",
    "interleave",
    "one_round",
]

Call = Callable[[], Awaitable[Any]]
Metadata = tuple[tuple[str, str], ...]  # what every call of a round sends
Prepare = Callable[[grpc.aio.Channel], Awaitable[Call]]  # a channel -> the call to repeat
Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Endpoint:
    """Where a round connects: an address, with TLS credentials when it needs them."""

    address: str
    credentials: grpc.ChannelCredentials | None = None
    options: tuple[tuple[str, Any], ...] = ()
    # Makes the channel instead (a channel with interceptors, say).
    factory: Callable[[], grpc.aio.Channel] | None = None

    def channel(self) -> grpc.aio.Channel:
        if self.factory is not None:
            return self.factory()
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address, options=self.options)
        return grpc.aio.secure_channel(self.address, self.credentials, options=self.options)


Target = str | Endpoint  # a plain address is a plaintext endpoint


@dataclass
class Sample:
    latencies_s: list[float]
    elapsed_s: float

    @property
    def calls_per_second(self) -> float:
        return len(self.latencies_s) / self.elapsed_s


async def get_product(channel: grpc.aio.Channel, metadata: Metadata = ()) -> Call:
    """catalog GetProduct of one product: the anchor of every table."""
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    request = catalog_pb2.GetProductRequest(id="prod-chemex")
    return lambda: stub.GetProduct(request, timeout=5, metadata=metadata)


async def one_round(prepare: Prepare, target: Target, calls: int, concurrency: int) -> Sample:
    latencies: list[float] = []
    endpoint = target if isinstance(target, Endpoint) else Endpoint(target)
    async with endpoint.channel() as channel:
        call = await prepare(channel)
        await call()  # connect outside the clock
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                await call()
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return Sample(latencies, elapsed)


# At most this many calls per target in interleave's warm-up round.
WARM_UP_CALLS = 500


async def interleave(
    targets: Mapping[Key, tuple[Prepare, Target]],
    calls: int,
    rounds: int,
    concurrency: int,
    counts: Mapping[Key, int] | None = None,
) -> dict[Key, Sample]:
    """`rounds` rounds of `calls` calls per target, after a warm-up round that is not kept.

    `counts` gives some targets another number of calls per round: a checkout
    takes 15 times a catalog read, so it gets fewer to keep the run short.
    """
    per_round = {key: (counts or {}).get(key, calls) for key in targets}
    merged = {key: Sample([], 0.0) for key in targets}
    for key, (prepare, target) in targets.items():
        await one_round(prepare, target, min(per_round[key], WARM_UP_CALLS), concurrency)
    for _ in range(rounds):
        for key, (prepare, target) in targets.items():
            sample = await one_round(prepare, target, per_round[key], concurrency)
            merged[key].latencies_s += sample.latencies_s
            merged[key].elapsed_s += sample.elapsed_s
    return merged
