"""The reader of mesh/traffic.yaml: YAML parsing and the schema check, whose
errors name `file:line: key: problem` (mesh.traffic is the policy it gives).

What it shares with the authorization policy's reader (finding, reading and
composing the file, the error, the basic node checks) is `mesh.yamlschema`;
its own mapping checks differ, since an upstream overrides only the keys it
names and a method list may be empty.

MESH_TRAFFIC_FILE (default: this folder's `traffic.yaml`) names the file: a
path relative to the repository root (the image's /app), or absolute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from mesh.breaker import BreakerConfig
from mesh.config import ConfigError, Env
from mesh.traffic import (
    CONTRACTS,
    VERSION,
    RetryPolicy,
    RetryThrottling,
    TrafficError,
    TrafficPolicy,
    UpstreamTraffic,
    contract_methods,
    duration,
)
from mesh.yamlschema import (
    INT,
    NodeChecker,
    child,
    compose,
    config_file,
    kind,
    read,
)

__all__ = [
    "DEFAULT_TRAFFIC_FILE",
    "TRAFFIC_FILE_VARIABLE",
    "load_traffic",
    "load_traffic_from_env",
    "parse_traffic",
    "traffic_file",
]

TRAFFIC_FILE_VARIABLE = "MESH_TRAFFIC_FILE"
DEFAULT_TRAFFIC_FILE = Path(__file__).resolve().with_name("traffic.yaml")

# gRPC retries at most 5 attempts (it clamps more), and needs 2 to retry at all.
MIN_ATTEMPTS, MAX_ATTEMPTS = 2, 5
MAX_TOKENS = 1000  # gRPC A6
MIN_TOKEN_RATIO = 0.001  # gRPC reads three decimals: less is 0, which it refuses
MAX_BACKOFF_S = 3600.0  # a JSON duration gRPC parses; an hour is past any sense
# grpc.StatusCode names; retrying on OK means nothing.
STATUS_CODES = tuple(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK)

_TOP_KEYS = ("version", "defaults", "upstreams")
_SECTION_KEYS = ("deadline_s", "retry", "retry_throttling", "breaker")
_RETRY_KEYS = (
    "max_attempts",
    "initial_backoff_s",
    "max_backoff_s",
    "backoff_multiplier",
    "retryable_codes",
)
_THROTTLING_KEYS = ("max_tokens", "token_ratio")
_BREAKER_KEYS = tuple(f.name for f in dataclasses.fields(BreakerConfig))


def traffic_file(env: Env) -> Path:
    """The traffic file MESH_TRAFFIC_FILE names (relative to the repository root)."""
    return config_file(env, TRAFFIC_FILE_VARIABLE, DEFAULT_TRAFFIC_FILE)


def load_traffic_from_env(env: Env, called: Collection[str] | None = None) -> TrafficPolicy:
    return load_traffic(traffic_file(env), called)


def load_traffic(path: Path | str, called: Collection[str] | None = None) -> TrafficPolicy:
    """Reads and checks the traffic file at `path`; `TrafficError` names what is wrong."""
    return parse_traffic(read(path, TrafficError), str(path), called)


def parse_traffic(
    text: str, source: str = "<traffic>", called: Collection[str] | None = None
) -> TrafficPolicy:
    """Checks a traffic document given as text; `source` names it in errors.

    Method names are checked against the contracts of the `called` upstreams
    only (default: all), whose descriptors this imports: the gateway, which
    must not hold the internal contracts (its reflection would show them),
    names the upstreams it calls; the others' names are taken as written.
    """
    root = compose(text, source, TrafficError, "version, defaults, upstreams")
    return _Checker(source, called).traffic(root)


@dataclass(frozen=True)
class _Value:
    """A checked value, with where it was written (for errors found after merging)."""

    value: Any
    node: yaml.Node
    key: str


_Fields = dict[str, _Value]
_Check = Callable[["_Checker", yaml.Node, str], Any]


class _Checker(NodeChecker):
    """Walks the composed document; every `fail` names the node's line and key."""

    error = TrafficError

    def __init__(self, source: str, called: Collection[str] | None = None) -> None:
        super().__init__(source)
        self.called = None if called is None else frozenset(called)

    # The document.

    def traffic(self, root: yaml.Node) -> TrafficPolicy:
        top = self.mapping(root, "(document)", _TOP_KEYS, required=_TOP_KEYS)
        self.version(top["version"])
        defaults = self.section(top["defaults"], "defaults", complete=True)
        self.backoffs(defaults)
        listed: dict[str, _Fields] = {}
        for name, key_node, value in self.entries(top["upstreams"], "upstreams"):
            key = f"upstreams.{name}"
            if name not in CONTRACTS:
                why = " (it serves no contract of its own)" if name == "gateway" else ""
                raise self.fail(
                    key_node,
                    key,
                    f"unknown upstream {name!r}{why}; expected one of {', '.join(CONTRACTS)}",
                )
            listed[name] = self.section(value, key, complete=False, service=name)
        upstreams = {
            name: self.upstream(name, defaults, listed.get(name, {})) for name in CONTRACTS
        }
        return TrafficPolicy(upstreams=upstreams, source=self.source)

    def version(self, node: yaml.Node) -> None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != INT:
            raise self.fail(node, "version", f"must be the integer {VERSION}, got {kind(node)}")
        if node.value.strip() != str(VERSION):
            raise self.fail(
                node, "version", f"unsupported version {node.value} (this reader knows {VERSION})"
            )

    def section(
        self, node: yaml.Node, key: str, *, complete: bool, service: str | None = None
    ) -> _Fields:
        """`defaults` (complete: every key) or one upstream's overrides, flattened
        to `retry.max_attempts`-style names."""
        fields = self.mapping(node, key, _SECTION_KEYS, required=_SECTION_KEYS if complete else ())
        flat: _Fields = {}
        if "deadline_s" in fields:
            where = f"{key}.deadline_s"
            flat["deadline_s"] = _Value(
                self.positive(fields["deadline_s"], where), fields["deadline_s"], where
            )
        blocks: tuple[tuple[str, tuple[str, ...], dict[str, _Check]], ...] = (
            ("retry", (*_RETRY_KEYS, "methods"), _RETRY_CHECKS),
            ("retry_throttling", _THROTTLING_KEYS, _THROTTLING_CHECKS),
            ("breaker", (*_BREAKER_KEYS, "bypass"), _BREAKER_CHECKS),
        )
        for block, allowed, checks in blocks:
            if block not in fields:
                continue
            where = f"{key}.{block}"
            required = tuple(checks) if complete else ()
            values = self.mapping(fields[block], where, allowed, required=required)
            for name, value in values.items():
                field_key = f"{where}.{name}"
                if name in ("methods", "bypass"):
                    checked: Any = self.methods(value, field_key, service)
                else:
                    checked = checks[name](self, value, field_key)
                flat[f"{block}.{name}"] = _Value(checked, value, field_key)
        return flat

    def upstream(self, service: str, defaults: _Fields, own: _Fields) -> UpstreamTraffic:
        merged = {**defaults, **own}

        def get(name: str) -> Any:
            return merged[name].value

        self.backoffs(merged)
        methods = merged.get("retry.methods")
        bypass = merged.get("breaker.bypass")
        try:
            breaker = BreakerConfig(**{name: get(f"breaker.{name}") for name in _BREAKER_KEYS})
        except ConfigError as error:  # the checks above mirror BreakerConfig's: a safety net
            where = merged["breaker.consecutive_failures"]
            raise self.fail(where.node, where.key, str(error)) from None
        return UpstreamTraffic(
            service=service,
            grpc_service=CONTRACTS[service],
            deadline_s=get("deadline_s"),
            retry=RetryPolicy(
                max_attempts=get("retry.max_attempts"),
                initial_backoff_s=get("retry.initial_backoff_s"),
                max_backoff_s=get("retry.max_backoff_s"),
                backoff_multiplier=get("retry.backoff_multiplier"),
                retryable_codes=get("retry.retryable_codes"),
                methods=() if methods is None else methods.value,
            ),
            retry_throttling=RetryThrottling(
                max_tokens=get("retry_throttling.max_tokens"),
                token_ratio=get("retry_throttling.token_ratio"),
            ),
            breaker=breaker,
            breaker_bypass=() if bypass is None else bypass.value,
        )

    def backoffs(self, fields: _Fields) -> None:
        """max_backoff_s is not below initial_backoff_s (gRPC would only cap it)."""
        initial, maximum = fields["retry.initial_backoff_s"], fields["retry.max_backoff_s"]
        if maximum.value >= initial.value:
            return
        # Name the one an upstream wrote, when the other comes from the defaults.
        own = initial.key.startswith("upstreams.") and not maximum.key.startswith("upstreams.")
        where = initial if own else maximum
        raise self.fail(
            where.node,
            where.key,
            f"max_backoff_s ({maximum.value:g}) is below initial_backoff_s ({initial.value:g})",
        )

    # Values.

    def methods(self, node: yaml.Node, key: str, service: str | None) -> tuple[str, ...]:
        items = self.items(node, key, empty_ok=True)
        if service is None:
            if items:
                raise self.fail(
                    node, key, "must be empty here: methods belong to one upstream's contract"
                )
            return ()
        if self.called is not None and service not in self.called:
            return tuple(self.text(item, f"{key}[{i}]") for i, item in enumerate(items))
        known = contract_methods(service)
        if known is None:
            raise self.fail(
                node,
                key,
                f"cannot check methods: no generated descriptors for {CONTRACTS[service]} "
                "(run `make protos`)",
            )
        methods: list[str] = []
        for index, item in enumerate(items):
            where = f"{key}[{index}]"
            name = self.text(item, where)
            if name not in known:
                raise self.fail(
                    item,
                    where,
                    f"{CONTRACTS[service]} has no method {name!r}; "
                    f"expected one of {', '.join(known)}",
                )
            if name in methods:
                raise self.fail(item, where, f"{name} is listed twice")
            methods.append(name)
        return tuple(methods)

    def codes(self, node: yaml.Node, key: str) -> tuple[str, ...]:
        items = self.items(node, key, empty_ok=True)
        if not items:
            raise self.fail(node, key, "must not be an empty list (gRPC retries on these codes)")
        codes: list[str] = []
        for index, item in enumerate(items):
            where = f"{key}[{index}]"
            name = self.text(item, where)
            if name not in STATUS_CODES:
                hint = f" (write {name.upper()})" if name.upper() in STATUS_CODES else ""
                raise self.fail(
                    item,
                    where,
                    f"{name!r} is not a gRPC status code name{hint}; "
                    f"expected one of {', '.join(STATUS_CODES)}",
                )
            if name in codes:
                raise self.fail(item, where, f"{name} is listed twice")
            codes.append(name)
        return tuple(codes)

    def positive(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key)
        if value <= 0:
            raise self.fail(node, key, f"must be greater than 0, got {value:g}")
        return value

    def backoff(self, node: yaml.Node, key: str) -> float:
        value = self.positive(node, key)
        if duration(value) == "0s":
            raise self.fail(node, key, f"must be at least 1ns (gRPC's precision), got {value:g}")
        if value > MAX_BACKOFF_S:
            raise self.fail(node, key, f"must be at most {MAX_BACKOFF_S:g} seconds, got {value:g}")
        return value

    def token_ratio(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key)
        if not MIN_TOKEN_RATIO <= value <= MAX_TOKENS:
            raise self.fail(
                node, key, f"must be between {MIN_TOKEN_RATIO} and {MAX_TOKENS}, got {value:g}"
            )
        if abs(round(value, 3) - value) > 1e-9:
            raise self.fail(
                node, key, f"gRPC reads three decimals at most; write {round(value, 3):g}"
            )
        return round(value, 3)

    def mapping(
        self,
        node: yaml.Node,
        key: str,
        allowed: tuple[str, ...],
        *,
        required: tuple[str, ...],
    ) -> dict[str, yaml.Node]:
        fields: dict[str, yaml.Node] = {}
        for name, key_node, value in self.entries(node, key):
            if name not in allowed:
                raise self.fail(
                    key_node, child(key, name), f"unknown key; expected {', '.join(allowed)}"
                )
            fields[name] = value
        missing = [name for name in required if name not in fields]
        if missing:
            raise self.fail(node, key, f"missing key(s) {', '.join(missing)}")
        return fields

    def entries(self, node: yaml.Node, key: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, f"must be a mapping, got {kind(node)}")
        seen: set[str] = set()
        for key_node, value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # Go's yaml.v3 merges `<<`, PyYAML's composer does not: allow neither.
                raise self.fail(key_node, child(key, "<<"), "merge keys are not allowed")
            name = self.text(key_node, f"{key} (a key)")
            if name in seen:
                raise self.fail(key_node, child(key, name), "duplicate key")
            seen.add(name)
            yield name, key_node, value


_RETRY_CHECKS: dict[str, _Check] = {
    "max_attempts": lambda c, n, k: c.integer(n, k, MIN_ATTEMPTS, MAX_ATTEMPTS),
    "initial_backoff_s": _Checker.backoff,
    "max_backoff_s": _Checker.backoff,
    "backoff_multiplier": _Checker.positive,
    "retryable_codes": _Checker.codes,
}
_THROTTLING_CHECKS: dict[str, _Check] = {
    "max_tokens": lambda c, n, k: c.integer(n, k, 1, MAX_TOKENS),
    "token_ratio": _Checker.token_ratio,
}
# BreakerConfig's own rules, checked here to name the line.
_BREAKER_CHECKS: dict[str, _Check] = {
    "consecutive_failures": lambda c, n, k: c.integer(n, k, 1),
    "error_ratio": _Checker.ratio,
    "window_s": _Checker.positive,
    "min_calls": lambda c, n, k: c.integer(n, k, 1),
    "open_s": _Checker.positive,
    "half_open_probes": lambda c, n, k: c.integer(n, k, 1),
}
