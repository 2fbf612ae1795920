"""The routes file: which gRPC services the gateway exposes, where they live, who may call.

```yaml
routes:
  - service: shop.catalog.v1.CatalogService   # fully qualified gRPC service name
    upstream: catalog:50051                    # any gRPC target
    auth: none                                 # or: required (the default)
```

A mistake in the file (a typo in a key, an unknown `auth`, a service listed
twice, health or reflection listed at all) is a `ConfigError` naming the
file and the entry, so a bad file stops the gateway at start.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mesh.config import ConfigError
from mesh.interceptors import INFRASTRUCTURE_SERVICE_PREFIXES

__all__ = ["Auth", "Route", "load_routes", "parse_routes"]

_SERVICE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_KEYS = frozenset({"service", "upstream", "auth"})


class Auth(enum.Enum):
    """What a route asks of its callers."""

    # Anonymous callers are let through; a credential that is sent must still
    # be valid (a client with an expired token learns of it at once, instead
    # of silently browsing as nobody).
    NONE = "none"
    # A valid credential, or UNAUTHENTICATED before any upstream is called.
    REQUIRED = "required"


@dataclass(frozen=True)
class Route:
    service: str  # fully qualified, e.g. shop.catalog.v1.CatalogService
    upstream: str  # a gRPC target, e.g. catalog:50051 or dns:///catalog:50051
    auth: Auth

    @property
    def mesh_service(self) -> str | None:
        """The shop service that serves this route's contract (`catalog` for
        shop.catalog.v1.CatalogService), whose identity the upstream must prove
        with mTLS on; None for a service outside the shop's contracts."""
        parts = self.service.split(".")
        return parts[1] if len(parts) >= 4 and parts[0] == "shop" else None


def load_routes(path: Path, variable: str = "GATEWAY_ROUTES_FILE") -> tuple[Route, ...]:
    """Reads and validates the routes file at `path` (named `variable` in errors)."""
    where = f"{variable} ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {error}") from None
    return parse_routes(document, where)


def parse_routes(document: Any, where: str) -> tuple[Route, ...]:
    """Validates a parsed routes document; `where` prefixes every error message."""
    if not isinstance(document, Mapping) or set(document) != {"routes"}:
        raise ConfigError(f"{where}: expected a mapping with one key, 'routes'")
    entries = document["routes"]
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise ConfigError(f"{where}: 'routes' must be a non-empty list")
    routes: list[Route] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        route = _route(entry, f"{where}: routes[{index}]")
        if route.service in seen:
            raise ConfigError(f"{where}: routes[{index}]: {route.service} is routed twice")
        seen.add(route.service)
        routes.append(route)
    return tuple(routes)


def _route(entry: Any, where: str) -> Route:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with service, upstream and auth")
    unknown = sorted(str(key) for key in set(entry) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    service = _text(entry, "service", where)
    if not _SERVICE_NAME.fullmatch(service):
        raise ConfigError(f"{where}.service: {service!r} is not a fully qualified service name")
    if service.startswith(INFRASTRUCTURE_SERVICE_PREFIXES):
        raise ConfigError(f"{where}.service: {service} is served by the gateway itself")
    upstream = _text(entry, "upstream", where)
    if any(char.isspace() for char in upstream):
        raise ConfigError(f"{where}.upstream: {upstream!r} is not a gRPC target")
    raw_auth = entry.get("auth", Auth.REQUIRED.value)
    try:
        auth = Auth(raw_auth)
    except ValueError:
        raise ConfigError(f"{where}.auth: must be 'none' or 'required', got {raw_auth!r}") from None
    return Route(service=service, upstream=upstream, auth=auth)


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}: required, a non-empty string")
    return value.strip()
