"""Steady load for the resilience tests: a fixed number of callers, each making
one call after another until the time is up, counting how every call ended."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc


@dataclass
class LoadResult:
    codes: Counter[grpc.StatusCode] = field(default_factory=Counter)
    details: Counter[str] = field(default_factory=Counter)  # of failed calls

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    @property
    def failed(self) -> int:
        return self.calls - self.codes[grpc.StatusCode.OK]


async def steady_load(
    call: Callable[[], Awaitable[object]],
    *,
    duration_s: float,
    callers: int,
    at: tuple[float, Callable[[], None]] | None = None,
    pause_s: float = 0.0,
) -> LoadResult:
    """`callers` loops of `call` for `duration_s`, each pausing `pause_s`
    between calls; `at` = (seconds in, action) runs the action once, mid-run
    (a replica killed, say). Each call must carry its own deadline, so the
    run ends within duration_s plus one of them."""
    result = LoadResult()
    end = time.monotonic() + duration_s

    async def caller() -> None:
        while time.monotonic() < end:
            try:
                await call()
                result.codes[grpc.StatusCode.OK] += 1
            except grpc.aio.AioRpcError as error:
                result.codes[error.code()] += 1
                result.details[f"{error.code().name}: {error.details()}"] += 1
            if pause_s:
                await asyncio.sleep(pause_s)

    async def action() -> None:
        if at is not None:
            await asyncio.sleep(at[0])
            at[1]()

    await asyncio.gather(action(), *(caller() for _ in range(callers)))
    return result
