"""The mesh as nodes and edges with live figures: each poll's scrapes against
the previous poll's (the one thing the console keeps between requests)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from console import redmetrics
from console.redmetrics import OUTSIDE, EdgeCounts, Scrape
from console.sources import Replica


@dataclass(frozen=True)
class Poll:
    at: float  # time.monotonic()
    scrape: Scrape


def node_health(replicas: Sequence[Replica]) -> str:
    statuses = {r.health for r in replicas}
    if "SERVING" in statuses:
        return "SERVING"
    if statuses & {"NOT_SERVING", "UNKNOWN"}:
        return "NOT_SERVING" if "NOT_SERVING" in statuses else "UNKNOWN"
    return "DOWN"


def shape(found: Mapping[str, Sequence[Replica]], now: Poll, before: Poll | None) -> dict[str, Any]:
    """The /api/topology document (see services/console/README.md)."""
    interval = None if before is None else now.at - before.at
    nodes = [
        {
            "id": service,
            "kind": "service",
            "health": node_health(replicas),
            "replicas": len(replicas),
            "replicas_up": sum(r.health == "SERVING" for r in replicas),
        }
        for service, replicas in found.items()
    ]
    edges = []
    for (source, target), counts in sorted(now.scrape.edges.items()):
        previous: EdgeCounts | None = None
        if before is not None:
            previous = before.scrape.edges.get((source, target), EdgeCounts())
        numbers = redmetrics.figures(counts, previous, interval)
        state = now.scrape.breakers.get((source, target))
        edges.append(
            {
                "id": f"{source}->{target}",
                "source": source,
                "target": target,
                "transport": "nats" if (source, target) in now.scrape.over_nats else "grpc",
                "rate": numbers.rate,
                "error_ratio": numbers.error_ratio,
                "p50_ms": numbers.p50_ms,
                "p99_ms": numbers.p99_ms,
                "calls": numbers.calls,
                "breaker": None if state is None else redmetrics.BREAKER_STATES.get(state),
            }
        )
    known = {n["id"] for n in nodes}
    for edge in edges:
        for end in (edge["source"], edge["target"]):
            if end not in known:  # a caller outside the mesh, or a callee not watched
                kind = "client" if end == OUTSIDE else "service"
                nodes.append(
                    {"id": end, "kind": kind, "health": "UNKNOWN", "replicas": 0, "replicas_up": 0}
                )
                known.add(end)
    errors = [r.error for replicas in found.values() for r in replicas if r.error]
    return {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "interval_s": interval,
        "nodes": nodes,
        "edges": edges,
        "errors": errors,
    }


def scrape_all(found: Mapping[str, Sequence[Replica]]) -> Poll:
    scrapes = [
        redmetrics.parse(service, replica.metrics_text)
        for service, replicas in found.items()
        for replica in replicas
        if replica.metrics_text is not None
    ]
    return Poll(at=time.monotonic(), scrape=redmetrics.merge(scrapes))
