"""The services' Prometheus text as RED figures per edge (pure functions).

Every Python caller records `rpc_client_call_duration_seconds` by `mesh_callee`
(mesh/metrics.py): the caller's view of an edge, refused calls of an open
breaker included, so an edge's figures come from there. Calls from outside the
mesh (a user's grpcurl into the gateway) exist only on the server's side,
`rpc_server_call_duration_seconds` with `mesh_caller="unknown"`; they become
the edge from the `clients` node. Breakers are `mesh_breaker_state` by
`mesh_callee` (0 closed, 1 half-open, 2 open). A hop over NATS is the
consumer's `messaging_process_duration_seconds` by subject; its producer is
the subject's second word, as the contract names them (`shop.orders.confirmed`
comes from orders), and a message is an error when it has an `error_type`.

Rates, error ratios and percentiles are over the interval between two
scrapes: the difference of the cumulative counters and histogram buckets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

CLIENT = "rpc_client_call_duration_seconds"
SERVER = "rpc_server_call_duration_seconds"
MESSAGES = "messaging_process_duration_seconds"
BREAKER = "mesh_breaker_state"
OUTSIDE = "clients"  # the node for callers without a mesh identity
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
# What a server cannot blame on its caller: the codes that make a server span
# ERROR (tracing/server_spans.py), so both views agree on what an error is.
ERROR_CODES = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
# Calls every probe and grpcurl makes: not traffic of the shop.
INFRASTRUCTURE = ("grpc.health.v1.", "grpc.reflection.")


@dataclass
class EdgeCounts:
    """Cumulative counts of one edge: calls, errors, histogram buckets (le -> count)."""

    calls: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, other: EdgeCounts) -> None:
        self.calls += other.calls
        self.errors += other.errors
        for le, count in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + count


@dataclass
class Scrape:
    """What one process's /metrics said that the console uses."""

    edges: dict[tuple[str, str], EdgeCounts] = field(default_factory=dict)
    breakers: dict[tuple[str, str], int] = field(default_factory=dict)
    over_nats: set[tuple[str, str]] = field(default_factory=set)  # edges that are NATS hops


def parse(service: str, text: str) -> Scrape:
    """One replica of `service`: its edges (caller, callee) and breakers."""
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("rpc_service", "").startswith(INFRASTRUCTURE):
                continue
            if sample.name.startswith(CLIENT) and "mesh_callee" in labels:
                key, base = (service, labels["mesh_callee"]), CLIENT
                failed = labels.get("rpc_grpc_status_code") in ERROR_CODES
            elif sample.name.startswith(SERVER) and labels.get("mesh_caller") == "unknown":
                key, base = (OUTSIDE, service), SERVER
                failed = labels.get("rpc_grpc_status_code") in ERROR_CODES
            elif sample.name.startswith(MESSAGES) and "messaging_destination_name" in labels:
                key, base = (producer(labels["messaging_destination_name"]), service), MESSAGES
                failed = "error_type" in labels
                scrape.over_nats.add(key)
            else:
                if sample.name == BREAKER and "mesh_callee" in labels:
                    scrape.breakers[(service, labels["mesh_callee"])] = int(sample.value)
                continue
            counts = scrape.edges.setdefault(key, EdgeCounts())
            if sample.name == f"{base}_count":
                counts.calls += sample.value
                if failed:
                    counts.errors += sample.value
            elif sample.name == f"{base}_bucket":
                le = float(labels["le"])
                counts.buckets[le] = counts.buckets.get(le, 0.0) + sample.value
    return scrape


def producer(subject: str) -> str:
    """`shop.orders.confirmed` -> orders: the contract names subjects after their producer."""
    parts = subject.split(".")
    return parts[1] if len(parts) > 2 else subject


def merge(scrapes: Iterable[Scrape]) -> Scrape:
    """A service's replicas as one: counts add up; a breaker shows its worst state."""
    merged = Scrape()
    for scrape in scrapes:
        for key, counts in scrape.edges.items():
            merged.edges.setdefault(key, EdgeCounts()).add(counts)
        for key, state in scrape.breakers.items():
            merged.breakers[key] = max(state, merged.breakers.get(key, 0))
        merged.over_nats |= scrape.over_nats
    return merged


@dataclass(frozen=True)
class EdgeFigures:
    rate: float | None  # calls/s
    error_ratio: float | None
    p50_ms: float | None
    p99_ms: float | None
    calls: float


def figures(now: EdgeCounts, before: EdgeCounts | None, interval_s: float | None) -> EdgeFigures:
    """An edge's figures over the interval since `before` (None: the first scrape).

    A counter that went down means the process restarted: its counts start
    again from zero, so the interval is measured from there."""
    if before is None or interval_s is None or interval_s <= 0:
        return EdgeFigures(None, None, None, None, now.calls)
    restarted = now.calls < before.calls
    base = EdgeCounts() if restarted else before
    calls = now.calls - base.calls
    errors = now.errors - base.errors
    buckets = {le: now.buckets.get(le, 0.0) - base.buckets.get(le, 0.0) for le in now.buckets}
    return EdgeFigures(
        rate=calls / interval_s,
        error_ratio=(errors / calls) if calls > 0 else None,
        p50_ms=_ms(quantile(0.5, buckets)),
        p99_ms=_ms(quantile(0.99, buckets)),
        calls=now.calls,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram (upper bound -> count), with
    linear interpolation inside the bucket it falls in, as Prometheus's
    histogram_quantile does; None without observations. In the +Inf bucket
    it is that bucket's lower bound: nothing better is known."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower
