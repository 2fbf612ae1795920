"""The mesh's authorization policy: which caller may call which method of which service.

One YAML file (`mesh/policy.yaml`) is the policy of every service, in every
language; this module is its Python reader, schema check and decision:

```yaml
version: 1
trust_domain: shop.local            # callers are spiffe://shop.local/<name>
services:                           # target service -> rules, any order
  catalog:
    - callers: [gateway]            # service names, each an identity
      methods: ["shop.catalog.v1.CatalogService/*"]
    - callers: [orders]
      methods: ["shop.catalog.v1.CatalogService/GetProduct"]
```

- A method is `package.Service/Method` or `package.Service/*`; a bare `*` is
  not. A target serves its own package only (`shop.<target>.v<N>`), plus
  server reflection (`grpc.reflection.v1.ServerReflection`,
  `grpc.reflection.v1alpha.ServerReflection`), closed unless listed. The
  package rule needs no generated code, so the Go and TypeScript readers can
  apply it as well; that a listed method exists in its contract is checked by
  a test against the generated descriptors (`mesh/tests/test_policy.py`).
- Health (`grpc.health.v1.Health`) is open to every caller, with or without
  an identity, and listing it is a mistake.
- A target missing from `services` answers health only; so does every call
  no rule names (default deny).

A mistake in the file (unknown or missing key, wrong type, unknown service or
caller, malformed or foreign method, empty list, duplicate key, entry or
grant, wrong version or trust domain) raises `PolicyError`, whose message is
`<file>:<line>: <key>: <problem>`; it is a `ConfigError`, so `mesh.run` stops
the service at start with that one line.

MESH_POLICY_FILE (default: this folder's `policy.yaml`) names the file: a
path relative to the repository root (the image's /app), or absolute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mesh.config import Env
from mesh.yamlschema import (
    INT,
    NodeChecker,
    SchemaError,
    child,
    compose,
    config_file,
    kind,
    read,
)

__all__ = [
    "DEFAULT_POLICY_FILE",
    "HEALTH_SERVICE",
    "POLICY_FILE_VARIABLE",
    "REFLECTION_SERVICES",
    "SERVICES",
    "Policy",
    "PolicyError",
    "Rule",
    "load_policy",
    "load_policy_from_env",
    "parse_policy",
    "policy_file",
]

POLICY_FILE_VARIABLE = "MESH_POLICY_FILE"
DEFAULT_POLICY_FILE = Path(__file__).resolve().with_name("policy.yaml")

VERSION = 1
# The shop's services, each one identity; the order is the one messages use.
SERVICES = ("gateway", "catalog", "orders", "inventory", "payments", "notifications")
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)

_TOP_KEYS = ("version", "trust_domain", "services")
_RULE_KEYS = ("callers", "methods")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_METHOD_PATTERN = re.compile(
    rf"(?P<service>(?P<package>{_IDENT}(?:\.{_IDENT})*)\.{_IDENT})/(?P<method>{_IDENT}|\*)"
)
_METHOD_NAME = re.compile(_IDENT)
# SPIFFE: lower-case letters, digits, dots, dashes and underscores; no empty label.
_TRUST_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


class PolicyError(SchemaError):
    """The policy file is unreadable or breaks the schema (`<source>:<line>: <key>: <problem>`)."""


@dataclass(frozen=True)
class Rule:
    """One entry of `services.<service>`: these callers may call these methods."""

    service: str
    callers: tuple[str, ...]
    methods: tuple[str, ...]  # as written: `pkg.Service/Method` or `pkg.Service/*`
    line: int


@dataclass(frozen=True)
class _Grant:
    methods: frozenset[str] = frozenset()  # "/pkg.Service/Method"
    services: frozenset[str] = frozenset()  # "pkg.Service", from "pkg.Service/*"


@dataclass(frozen=True)
class Policy:
    """A checked policy and the decision it makes for one call."""

    trust_domain: str
    rules: tuple[Rule, ...]
    source: str = "<policy>"
    _grants: Mapping[tuple[str, str], _Grant] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        exact: dict[tuple[str, str], set[str]] = {}
        wildcard: dict[tuple[str, str], set[str]] = {}
        for rule in self.rules:
            for caller in rule.callers:
                pair = (rule.service, caller)
                for pattern in rule.methods:
                    service, _, method = pattern.partition("/")
                    if method == "*":
                        wildcard.setdefault(pair, set()).add(service)
                    else:
                        exact.setdefault(pair, set()).add(f"/{pattern}")
        grants = {
            pair: _Grant(frozenset(exact.get(pair, ())), frozenset(wildcard.get(pair, ())))
            for pair in exact.keys() | wildcard.keys()
        }
        object.__setattr__(self, "_grants", grants)

    def identity(self, service: str) -> str:
        """The SPIFFE ID of `service` in this trust domain."""
        _check_service(service)
        return f"spiffe://{self.trust_domain}/{service}"

    def caller_name(self, identity: str | None) -> str | None:
        """The service `identity` names, or None when it is none of the shop's
        services in this trust domain (absent, foreign, malformed)."""
        if identity is None:
            return None
        name = identity.removeprefix(f"spiffe://{self.trust_domain}/")
        return name if name != identity and name in SERVICES else None

    def allows(self, service: str, caller_identity: str | None, method: str) -> bool:
        """Whether `caller_identity` (a SPIFFE ID, None without one) may call
        `method` (`/pkg.Service/Method`, as in `HandlerCallDetails.method`) on
        `service`. Raises ValueError for a `service` that is not the shop's."""
        _check_service(service)
        if method.startswith(f"/{HEALTH_SERVICE}/"):
            return True
        caller = self.caller_name(caller_identity)
        if caller is None:
            return False
        grant = self._grants.get((service, caller))
        if grant is None:
            return False
        if method in grant.methods:
            return True
        grpc_service, _, name = method.removeprefix("/").rpartition("/")
        return (
            method.startswith("/")
            and _METHOD_NAME.fullmatch(name) is not None
            and grpc_service in grant.services
        )

    def callers_of(self, service: str) -> tuple[str, ...]:
        """The services that may call some method of `service` (health aside)."""
        _check_service(service)
        return tuple(name for name in SERVICES if (service, name) in self._grants)

    def methods_for(self, service: str, caller: str) -> tuple[str, ...]:
        """The method patterns `caller` may call on `service`, as written, in file order."""
        _check_service(service)
        _check_service(caller)
        return tuple(
            pattern
            for rule in self.rules
            if rule.service == service and caller in rule.callers
            for pattern in rule.methods
        )


def _check_service(name: str) -> None:
    if name not in SERVICES:
        raise ValueError(f"{name!r} is not one of the shop's services ({', '.join(SERVICES)})")


def policy_file(env: Env) -> Path:
    """The policy file MESH_POLICY_FILE names (relative to the repository root)."""
    return config_file(env, POLICY_FILE_VARIABLE, DEFAULT_POLICY_FILE)


def load_policy_from_env(env: Env) -> Policy:
    return load_policy(policy_file(env))


def load_policy(path: Path | str) -> Policy:
    """Reads and checks the policy file at `path`; `PolicyError` names what is wrong."""
    return parse_policy(read(path, PolicyError), str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Checks a policy document given as text; `source` names it in errors."""
    root = compose(text, source, PolicyError, "version, trust_domain, services")
    return _Checker(source).policy(root)


class _Checker(NodeChecker):
    """Walks the composed document; every `fail` names the node's line and key."""

    error = PolicyError

    def policy(self, root: yaml.Node) -> Policy:
        top = self.mapping(root, "(document)", _TOP_KEYS)
        self.version(top["version"])
        trust_domain = self.text(top["trust_domain"], "trust_domain")
        if not _TRUST_DOMAIN.fullmatch(trust_domain):
            raise self.fail(
                top["trust_domain"],
                "trust_domain",
                f"{trust_domain!r} is not a SPIFFE trust domain (a lower-case name "
                "such as shop.local, without spiffe:// or a path)",
            )
        rules: list[Rule] = []
        for service, key_node, value in self.entries(top["services"], "services"):
            if service not in SERVICES:
                raise self.fail(key_node, f"services.{service}", self.unknown(service, "service"))
            rules.extend(self.rules(service, value, f"services.{service}"))
        return Policy(trust_domain=trust_domain, rules=tuple(rules), source=self.source)

    def version(self, node: yaml.Node) -> None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != INT:
            raise self.fail(node, "version", f"must be the integer {VERSION}, got {kind(node)}")
        if node.value.strip() != str(VERSION):
            raise self.fail(
                node, "version", f"unsupported version {node.value} (this reader knows {VERSION})"
            )

    def rules(self, service: str, node: yaml.Node, key: str) -> Iterator[Rule]:
        granted: dict[tuple[str, str], int] = {}  # (caller, pattern) -> line of the grant
        for index, item in enumerate(self.items(node, key)):
            where = f"{key}[{index}]"
            fields = self.mapping(item, where, _RULE_KEYS)
            callers = self.names(fields["callers"], f"{where}.callers", "caller")
            methods = self.methods(fields["methods"], f"{where}.methods", service)
            for caller in callers:
                for pattern, pattern_node in methods:
                    earlier = granted.get((caller, pattern))
                    if earlier is not None:
                        raise self.fail(
                            pattern_node,
                            f"{where}.methods",
                            f"{caller} is already granted {pattern} at line {earlier}",
                        )
                    granted[(caller, pattern)] = pattern_node.start_mark.line + 1
            yield Rule(
                service=service,
                callers=callers,
                methods=tuple(pattern for pattern, _ in methods),
                line=item.start_mark.line + 1,
            )

    def names(self, node: yaml.Node, key: str, what: str) -> tuple[str, ...]:
        names: list[str] = []
        for index, item in enumerate(self.items(node, key)):
            name = self.text(item, f"{key}[{index}]")
            if name not in SERVICES:
                raise self.fail(item, f"{key}[{index}]", self.unknown(name, what))
            if name in names:
                raise self.fail(item, f"{key}[{index}]", f"{name} is listed twice")
            names.append(name)
        return tuple(names)

    def methods(self, node: yaml.Node, key: str, service: str) -> list[tuple[str, yaml.Node]]:
        methods: list[tuple[str, yaml.Node]] = []
        for index, item in enumerate(self.items(node, key)):
            where = f"{key}[{index}]"
            pattern = self.text(item, where)
            match = _METHOD_PATTERN.fullmatch(pattern)
            if match is None:
                raise self.fail(
                    item,
                    where,
                    f"{pattern!r} is not package.Service/Method or package.Service/*",
                )
            grpc_service, package = match["service"], match["package"]
            if grpc_service == HEALTH_SERVICE:
                raise self.fail(item, where, "health is open to every caller; do not list it")
            if grpc_service not in REFLECTION_SERVICES and not re.fullmatch(
                rf"shop\.{service}\.v[0-9]+", package
            ):
                raise self.fail(
                    item,
                    where,
                    f"{service} does not serve {grpc_service} (only shop.{service}.v<N> "
                    f"services and {' or '.join(REFLECTION_SERVICES)})",
                )
            if any(pattern == seen for seen, _ in methods):
                raise self.fail(item, where, f"{pattern} is listed twice")
            methods.append((pattern, item))
        return methods

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        """A mapping with exactly the keys `allowed`."""
        fields: dict[str, yaml.Node] = {}
        for name, key_node, value in self.entries(node, key, allow_empty=True):
            if name not in allowed:
                raise self.fail(
                    key_node, child(key, name), f"unknown key; expected {', '.join(allowed)}"
                )
            fields[name] = value
        missing = [name for name in allowed if name not in fields]
        if missing:
            raise self.fail(node, key, f"missing key(s) {', '.join(missing)}")
        return fields

    def entries(
        self, node: yaml.Node, key: str, *, allow_empty: bool = False
    ) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, f"must be a mapping, got {kind(node)}")
        if not node.value and not allow_empty:
            raise self.fail(node, key, "must not be empty")
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

    @staticmethod
    def unknown(name: str, what: str) -> str:
        return f"unknown {what} {name!r}; expected one of {', '.join(SERVICES)}"
