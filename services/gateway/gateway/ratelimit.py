"""Token buckets per caller: `rate` tokens a second up to `burst`, one per call.

A caller is an authenticated subject, or an anonymous peer's address (without
its port, so reconnecting does not buy a fresh bucket). The map of buckets is
bounded: at `max_buckets` the least recently used bucket is dropped. A bucket
idle for `burst / rate` seconds is full again, exactly what a new one would be,
so dropping it changes nothing; only when more callers than `max_buckets` are
active within that time does one of them get a fresh bucket early.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBuckets"]


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        max_buckets: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_buckets < 1:
            raise ValueError("rate must be positive, burst and max_buckets at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._max = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: str) -> float:
        """Takes a token for `caller`: 0.0 if there was one, else seconds until there is."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.popitem(last=False)
            bucket = self._buckets[caller] = _Bucket(self._burst, now)
        else:
            self._buckets.move_to_end(caller)
            elapsed = now - bucket.updated
            if elapsed > 0:
                bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
                bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate
