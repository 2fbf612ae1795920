"""Typed reading of environment variables, once, at start-up.

Each service declares a frozen dataclass and fills it from an `Env`; a missing
or malformed variable raises `ConfigError` naming it, so a bad deployment fails
at start instead of on the first request. A dozen lines of parsing are cheaper
to read than a settings framework (pydantic-settings) and keep the services'
dependency list short.
"""

from __future__ import annotations

import binascii
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """An environment variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Env:
    """A read-only view of environment variables with typed getters."""

    values: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def _raw(self, name: str, default: str | None) -> str:
        value = self.values.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default

    def text(self, name: str, default: str | None = None) -> str:
        return self._raw(name, default)

    def optional(self, name: str) -> str | None:
        value = self.values.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int | None = None, *, minimum: int | None = None) -> int:
        raw = self._raw(name, None if default is None else repr(default))
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    def number(
        self, name: str, default: float | None = None, *, minimum: float | None = None
    ) -> float:
        raw = self._raw(name, None if default is None else repr(default))
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    def flag(self, name: str, default: bool | None = None) -> bool:
        fallback = None if default is None else ("true" if default else "false")
        raw = self._raw(name, fallback).lower()
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def address(self, name: str, default: str | None = None) -> str:
        """A `host:port` pair such as `0.0.0.0:50051` (port 0 picks a free port)."""
        raw = self._raw(name, default)
        host, sep, port = raw.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{name} must be host:port, got {raw!r}")
        return raw

    def log_level(self, name: str = "LOG_LEVEL", default: str = "INFO") -> str:
        """A logging level name such as DEBUG or WARNING (any case), upper-cased."""
        raw = self._raw(name, default).upper()
        if raw == "WARN":  # what Go and Node services accept too
            raw = "WARNING"
        if raw not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"{name} must be DEBUG, INFO, WARNING or ERROR, got {raw!r}")
        return raw

    def hex_key(self, name: str, min_bytes: int = 16) -> bytes | None:
        """An optional secret given in hex (an HMAC key, say); None when unset."""
        raw = self.optional(name)
        if raw is None:
            return None
        try:
            key = bytes.fromhex(raw)
        except (ValueError, binascii.Error):
            raise ConfigError(f"{name} must be hex") from None
        if len(key) < min_bytes:
            raise ConfigError(f"{name} must be at least {2 * min_bytes} hex digits")
        return key
