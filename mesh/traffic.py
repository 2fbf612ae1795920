"""The mesh's traffic policy: deadlines, retries and circuit breakers per upstream.

One YAML file (`mesh/traffic.yaml`) says how a Python client treats each
upstream it calls; this module holds the policy and turns an upstream's settings into what
`mesh.channels` applies; `mesh.traffic_file` reads and checks the file:

```yaml
version: 1
defaults:                        # complete; merged under each upstream
  deadline_s: 2.0                # a call nobody bounded gets this timeout
  retry:                         # gRPC retryPolicy (service config)
    max_attempts: 3
    initial_backoff_s: 0.05
    max_backoff_s: 0.5
    backoff_multiplier: 2
    retryable_codes: [UNAVAILABLE]
  retry_throttling: {max_tokens: 10, token_ratio: 0.1}   # gRPC A6
  breaker: {consecutive_failures: 5, error_ratio: 0.5, window_s: 10,
            min_calls: 20, open_s: 5, half_open_probes: 1}
upstreams:                       # any key of `defaults`, any part of a block
  catalog:
    retry: {methods: [GetProduct, ListProducts, SearchProducts]}
  payments:
    breaker: {bypass: [ResolveCharge]}   # neither refused nor counted
```

- An upstream is one of the shop services with a contract (catalog, orders,
  inventory, payments, notifications); the gateway serves none of its own.
  An upstream the file does not list gets the defaults and retries nothing.
- Only the methods in `retry.methods` are retried; each must exist in the
  upstream's generated descriptors (`shop.<name>.v1.<name>_pb2`), as must
  those of `breaker.bypass` (an upstream's only, like `retry.methods`).
- The ranges are gRPC's: 2 to 5 attempts, backoffs and multiplier above 0,
  retryable codes named as in `grpc.StatusCode` (OK aside), throttling with
  1 to 1000 tokens and a token ratio of at least 0.001 with three decimals at
  most (gRPC reads no more). The breaker's are `mesh.breaker.BreakerConfig`'s.

A mistake in the file (unknown or missing key, wrong type, value out of range,
unknown service, method or status code, duplicate key or entry, bad YAML)
raises `TrafficError`, whose message is `<file>:<line>: <key>: <problem>`; it
is a `ConfigError`, so a service stops at start with that one line.

`mesh.channels.Channels(traffic=...)` gives each upstream's channel its
settings: the service config, the default deadline and the breaker.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pool

from mesh.breaker import BreakerConfig
from mesh.deadlines import DeadlinePropagation
from mesh.yamlschema import SchemaError

__all__ = [
    "CONTRACTS",
    "DEFAULT_SERVICE_CONFIG",
    "RetryPolicy",
    "RetryThrottling",
    "TrafficError",
    "TrafficPolicy",
    "UpstreamTraffic",
    "contract_methods",
    "duration",
]


VERSION = 1

# Every channel's service config, retries aside: round_robin spreads calls
# over every address a name resolves to (replicas in DNS or an ipv4: list),
# and client-side health checking skips replicas that report NOT_SERVING,
# such as one that is draining.
DEFAULT_SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
}
# Upstream name -> the gRPC service it serves; the gateway only proxies these.
CONTRACTS: Mapping[str, str] = {
    "catalog": "shop.catalog.v1.CatalogService",
    "orders": "shop.orders.v1.OrdersService",
    "inventory": "shop.inventory.v1.InventoryService",
    "payments": "shop.payments.v1.PaymentsService",
    "notifications": "shop.notifications.v1.NotificationsService",
}


def contract_methods(service: str) -> tuple[str, ...] | None:
    """The method names of `service`'s contract, from the generated descriptors."""
    grpc_service = CONTRACTS[service]
    package = grpc_service.rpartition(".")[0]
    try:
        importlib.import_module(f"{package}.{service}_pb2")
        descriptor = descriptor_pool.Default().FindServiceByName(grpc_service)
    except (ModuleNotFoundError, KeyError):
        return None
    return tuple(method.name for method in descriptor.methods)


class TrafficError(SchemaError):
    """The traffic file is unreadable or breaks the schema (`<source>:<line>: <key>: <problem>`)."""


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retryPolicy for the `methods` named (bare names, e.g. GetProduct)."""

    max_attempts: int
    initial_backoff_s: float
    max_backoff_s: float
    backoff_multiplier: float
    retryable_codes: tuple[str, ...]  # grpc.StatusCode names
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryThrottling:
    """gRPC A6: retries stop while tokens are at or below half of `max_tokens`;
    a failure costs one token, a success gives back `token_ratio`."""

    max_tokens: int
    token_ratio: float


@dataclass(frozen=True)
class UpstreamTraffic:
    """What a client applies to one upstream's channel."""

    service: str  # the shop's name, e.g. catalog
    grpc_service: str  # e.g. shop.catalog.v1.CatalogService
    deadline_s: float
    retry: RetryPolicy
    retry_throttling: RetryThrottling
    breaker: BreakerConfig
    # Methods the breaker neither refuses nor counts (`breaker.bypass`).
    breaker_bypass: tuple[str, ...] = ()

    def bypassed_methods(self) -> frozenset[str]:
        """`breaker_bypass` as gRPC method paths (`/shop.payments.v1.PaymentsService/Refund`)."""
        return frozenset(f"/{self.grpc_service}/{method}" for method in self.breaker_bypass)

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config (JSON-able) of this upstream's channel:
        round_robin and health checking as `DEFAULT_SERVICE_CONFIG`, the retry
        policy on the listed methods, and retry throttling."""
        config = copy.deepcopy(DEFAULT_SERVICE_CONFIG)
        retry = self.retry
        if retry.methods:
            config["methodConfig"] = [
                {
                    "name": [
                        {"service": self.grpc_service, "method": method} for method in retry.methods
                    ],
                    "retryPolicy": {
                        "maxAttempts": retry.max_attempts,
                        "initialBackoff": duration(retry.initial_backoff_s),
                        "maxBackoff": duration(retry.max_backoff_s),
                        "backoffMultiplier": retry.backoff_multiplier,
                        "retryableStatusCodes": list(retry.retryable_codes),
                    },
                }
            ]
        config["retryThrottling"] = {
            "maxTokens": self.retry_throttling.max_tokens,
            "tokenRatio": self.retry_throttling.token_ratio,
        }
        return config

    def deadlines(self) -> DeadlinePropagation:
        """Deadline propagation with this upstream's default timeout."""
        return DeadlinePropagation(default_timeout_s=self.deadline_s)


@dataclass(frozen=True)
class TrafficPolicy:
    """A checked traffic file: one `UpstreamTraffic` per contract service."""

    upstreams: Mapping[str, UpstreamTraffic]
    source: str = "<traffic>"

    def upstream(self, service: str) -> UpstreamTraffic:
        """The settings for calls to `service` (e.g. catalog); ValueError for a
        name that is not an upstream."""
        traffic = self.upstreams.get(service)
        if traffic is None:
            raise ValueError(f"{service!r} is not an upstream (one of {', '.join(CONTRACTS)})")
        return traffic


def duration(seconds: float) -> str:
    """A proto3 JSON duration such as `0.05s` (nanoseconds at most, as gRPC reads)."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"
