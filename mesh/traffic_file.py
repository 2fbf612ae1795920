"""The reader of mesh/traffic.yaml: YAML parsing and the schema check, whose
errors name `file:line: key: problem` (mesh.traffic is the policy it gives).

The YAML helpers are this module's own, not `mesh.policy`'s: those are private,
raise `PolicyError`, require every key of a mapping and refuse empty lists,
while this file has optional keys (an upstream overrides what it names) and
empty method lists.

MESH_TRAFFIC_FILE (default: this folder's `traffic.yaml`) names the file: a
path relative to the repository root (the image's /app), or absolute.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import descriptor_pool

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
    duration,
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
# mesh/traffic.py -> the repository root (or the image's /app).
REPO_ROOT = Path(__file__).resolve().parents[1]

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
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_KINDS = {
    _STR: "a string",
    _INT: "an integer",
    _FLOAT: "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
}
_SCALARS = yaml.constructor.SafeConstructor()


def traffic_file(env: Env) -> Path:
    """The traffic file MESH_TRAFFIC_FILE names (relative to the repository root)."""
    raw = env.optional(TRAFFIC_FILE_VARIABLE)
    if raw is None:
        return DEFAULT_TRAFFIC_FILE
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


def load_traffic_from_env(env: Env) -> TrafficPolicy:
    return load_traffic(traffic_file(env))


def load_traffic(path: Path | str) -> TrafficPolicy:
    """Reads and checks the traffic file at `path`; `TrafficError` names what is wrong."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problem = getattr(error, "strerror", None) or str(error)
        raise TrafficError(source, 0, "(file)", f"cannot read: {problem}") from None
    return parse_traffic(text, source)


def parse_traffic(text: str, source: str = "<traffic>") -> TrafficPolicy:
    """Checks a traffic document given as text; `source` names it in errors."""
    try:
        # Nodes, not Python values: they keep each value's line and YAML type,
        # and a duplicate key, which SafeLoader would let overwrite the first.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise TrafficError(source, line, "(document)", f"not valid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise TrafficError(source, 0, "(document)", f"not valid YAML: {error}") from None
    if root is None:
        raise TrafficError(source, 1, "(document)", "empty; expected version, defaults, upstreams")
    return _Checker(source).traffic(root)


@dataclass(frozen=True)
class _Value:
    """A checked value, with where it was written (for errors found after merging)."""

    value: Any
    node: yaml.Node
    key: str


_Fields = dict[str, _Value]
_Check = Callable[["_Checker", yaml.Node, str], Any]


class _Checker:
    """Walks the composed document; every `fail` names the node's line and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node, key: str, problem: str) -> TrafficError:
        return TrafficError(self.source, node.start_mark.line + 1, key, problem)

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
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT:
            raise self.fail(node, "version", f"must be the integer {VERSION}, got {_kind(node)}")
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
            ("breaker", _BREAKER_KEYS, _BREAKER_CHECKS),
        )
        for block, allowed, checks in blocks:
            if block not in fields:
                continue
            where = f"{key}.{block}"
            required = tuple(checks) if complete else ()
            values = self.mapping(fields[block], where, allowed, required=required)
            for name, value in values.items():
                field_key = f"{where}.{name}"
                if name == "methods":
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
        items = self.items(node, key)
        if service is None:
            if items:
                raise self.fail(
                    node, key, "must be empty here: methods belong to one upstream's contract"
                )
            return ()
        known = _contract_methods(service)
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
        items = self.items(node, key)
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

    def integer(self, node: yaml.Node, key: str, low: int, high: int | None = None) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT:
            raise self.fail(node, key, f"must be an integer, got {_kind(node)}")
        value = _SCALARS.construct_yaml_int(node)
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise self.fail(node, key, f"must be {span}, got {value}")
        return value

    def number(self, node: yaml.Node, key: str) -> float:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (_INT, _FLOAT):
            raise self.fail(node, key, f"must be a number, got {_kind(node)}")
        value = float(
            _SCALARS.construct_yaml_int(node)
            if node.tag == _INT
            else _SCALARS.construct_yaml_float(node)
        )
        if not math.isfinite(value):
            raise self.fail(node, key, f"must be a finite number, got {node.value}")
        return value

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

    def ratio(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key)
        if not 0 <= value <= 1:
            raise self.fail(node, key, f"must be within [0, 1], got {value:g}")
        return value

    # Structure.

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
                    key_node, _child(key, name), f"unknown key; expected {', '.join(allowed)}"
                )
            fields[name] = value
        missing = [name for name in required if name not in fields]
        if missing:
            raise self.fail(node, key, f"missing key(s) {', '.join(missing)}")
        return fields

    def entries(self, node: yaml.Node, key: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, f"must be a mapping, got {_kind(node)}")
        seen: set[str] = set()
        for key_node, value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # Go's yaml.v3 merges `<<`, PyYAML's composer does not: allow neither.
                raise self.fail(key_node, _child(key, "<<"), "merge keys are not allowed")
            name = self.text(key_node, f"{key} (a key)")
            if name in seen:
                raise self.fail(key_node, _child(key, name), "duplicate key")
            seen.add(name)
            yield name, key_node, value

    def items(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key, f"must be a list, got {_kind(node)}")
        return list(node.value)

    def text(self, node: yaml.Node, key: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR or not node.value.strip():
            raise self.fail(node, key, f"must be a non-empty string, got {_kind(node)}")
        return str(node.value)


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


def _contract_methods(service: str) -> tuple[str, ...] | None:
    """The method names of `service`'s contract, from the generated descriptors."""
    grpc_service = CONTRACTS[service]
    package = grpc_service.rpartition(".")[0]
    try:
        importlib.import_module(f"{package}.{service}_pb2")
        descriptor = descriptor_pool.Default().FindServiceByName(grpc_service)
    except (ModuleNotFoundError, KeyError):
        return None
    return tuple(method.name for method in descriptor.methods)


def _child(key: str, name: str) -> str:
    return name if key == "(document)" else f"{key}.{name}"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR and not node.value.strip():
        return "an empty string"
    return _KINDS.get(node.tag, f"a {node.tag} value")
