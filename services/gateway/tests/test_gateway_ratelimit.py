"""Token buckets with an injected clock."""

from __future__ import annotations

import pytest

from gateway.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_call_per_token() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.25
    assert buckets.take("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)


def test_a_refused_call_takes_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    assert buckets.take("a") == 0.0
    for _ in range(5):
        assert buckets.take("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.take("a") == 0.0


def test_refill_stops_at_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10.0, burst=2, clock=clock)
    buckets.take("a")
    clock.now += 3600
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") > 0


def test_callers_have_their_own_buckets() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=Clock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_the_least_recently_used_bucket_is_evicted_at_the_bound() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_buckets=2, clock=clock)
    buckets.take("a")
    buckets.take("b")
    assert buckets.take("a") > 0  # a is now the most recently used
    buckets.take("c")  # evicts b
    assert len(buckets) == 2
    assert buckets.take("a") > 0, "a was kept, empty"
    assert buckets.take("b") == 0.0, "b was dropped, so it starts full"


def test_a_clock_going_backwards_adds_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    buckets.take("a")
    clock.now -= 10
    assert buckets.take("a") > 0


@pytest.mark.parametrize(("rate", "burst", "size"), [(0.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int, size: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(rate, burst, size)
