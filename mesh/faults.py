"""Fault injection: delay calls, or fail a share of them, to show deadlines,
retries and breakers at work.

Two sources of rules, the same in the Go and TypeScript services:

- FAULT_DELAY_MS / FAULT_ERROR_PERCENT (`FaultConfig`), read once at start:
  every call of the service is delayed, then a share fails with UNAVAILABLE.
- MESH_FAULTS_FILE (`FaultFile`), a YAML file read again whenever it changes,
  so faults are switched on and off without a restart:

      version: 1                  # optional; if present, 1
      faults:                     # service name -> method -> rule
        payments:
          "*": {delay_ms: 300}    # every method of payments
        inventory:
          ReserveStock: {error_ratio: 0.3, error_code: UNAVAILABLE}

  A rule has delay_ms (an integer >= 0), error_ratio (0..1) and error_code
  (a status code name other than OK, default UNAVAILABLE), at least one of
  them. A service reads only its own entries; the others are checked for
  shape only, since each service's reader knows its own methods.

For a call to method M the rule is the file's under M, else under "*", else
the environment's, else none. The delay ends early when the call is cancelled
or its deadline passes (grpc.aio cancels the handler's task). A failed call
gets `injected fault in /package.Service/Method`. Health and reflection are
never faulted: probes must tell the truth about the process.

The file is looked at (one `stat`) at most once a second, on a call. A
changed file that is good replaces the rules at once; a bad one is logged as
a WARNING and the rules stay as they were: the file is run-time state, so it
neither stops a start nor fails a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from mesh.config import ConfigError, Env
from mesh.yamlschema import INT, NodeChecker, SchemaError, child, compose, kind

__all__ = [
    "EVERY_METHOD",
    "FAULTS_FILE_VARIABLE",
    "FaultConfig",
    "FaultFile",
    "FaultFileError",
    "FaultRule",
    "parse_faults",
]

log = logging.getLogger("mesh.faults")

FAULTS_FILE_VARIABLE = "MESH_FAULTS_FILE"
EVERY_METHOD = "*"
VERSION = 1
# How often, at most, a call looks at the file (one stat).
CHECK_INTERVAL_S = 1.0
ERROR_CODES = tuple(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK)
_TOP_KEYS = ("version", "faults")
_RULE_KEYS = ("delay_ms", "error_ratio", "error_code")
# A method's name as a proto declares it.
_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class FaultRule:
    """What to do to one call: wait `delay_ms`, then fail with `error_code`
    with probability `error_ratio`."""

    delay_ms: int = 0
    error_ratio: float = 0.0
    error_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class FaultConfig:
    """The environment's faults for every call of this service; zero means off."""

    delay_ms: int = 0
    error_percent: float = 0.0

    @classmethod
    def from_env(cls, env: Env) -> FaultConfig:
        percent = env.number("FAULT_ERROR_PERCENT", 0.0, minimum=0.0)
        if percent > 100:
            raise ConfigError(f"FAULT_ERROR_PERCENT must be at most 100, got {percent}")
        return cls(delay_ms=env.integer("FAULT_DELAY_MS", 0, minimum=0), error_percent=percent)

    @property
    def enabled(self) -> bool:
        return self.delay_ms > 0 or self.error_percent > 0

    def rule(self) -> FaultRule | None:
        if not self.enabled:
            return None
        return FaultRule(self.delay_ms, self.error_percent / 100, grpc.StatusCode.UNAVAILABLE)


class FaultFileError(SchemaError):
    """The fault file breaks its schema (`<source>:<line>: <key>: <problem>`)."""


Rules = Mapping[str, FaultRule]  # method short name or "*" -> rule


def parse_faults(text: str, service: str, source: str = "<faults>") -> dict[str, FaultRule]:
    """`service`'s rules in a fault file given as text; `FaultFileError` says
    what is wrong. An empty document holds no rules."""
    try:
        root = compose(text, source, FaultFileError, "version and faults")
    except FaultFileError as error:
        if error.key == "(document)" and error.problem.startswith("empty"):
            return {}
        raise
    return _Checker(source).document(root, service)


class _Checker(NodeChecker):
    error = FaultFileError

    def document(self, root: yaml.Node, service: str) -> dict[str, FaultRule]:
        top = dict(self.entries(root, "(document)", _TOP_KEYS))
        if "version" in top:
            node = top["version"]
            if not isinstance(node, yaml.ScalarNode) or node.tag != INT or node.value != "1":
                raise self.fail(node, "version", f"must be {VERSION}, got {node_text(node)}")
        rules: dict[str, FaultRule] = {}
        faults = top.get("faults")
        if faults is None or _is_null(faults):
            return rules
        for name, services in self.entries(faults, "faults"):
            key = f"faults.{name}"
            if _is_null(services):
                continue
            for method, rule in self.entries(services, key):
                where = f"{key}.{method}"
                if name == service:
                    rules[self.method(rule, where, method)] = self.rule(rule, where)
                elif not isinstance(rule, yaml.MappingNode):
                    raise self.fail(rule, where, f"must be a mapping, got {kind(rule)}")
        return rules

    def method(self, node: yaml.Node, key: str, name: str) -> str:
        if name != EVERY_METHOD and not _METHOD_NAME.fullmatch(name):
            hint = f" (write {name.rpartition('/')[2]})" if "/" in name else ""
            raise self.fail(node, key, f'not a method\'s short name or "*"{hint}')
        return name

    def rule(self, node: yaml.Node, key: str) -> FaultRule:
        fields = dict(self.entries(node, key, _RULE_KEYS))
        if not fields:
            raise self.fail(node, key, f"a rule needs at least one of {', '.join(_RULE_KEYS)}")
        rule = FaultRule()
        if "delay_ms" in fields:
            rule = _replace(
                rule, delay_ms=self.integer(fields["delay_ms"], child(key, "delay_ms"), 0)
            )
        if "error_ratio" in fields:
            ratio = self.ratio(fields["error_ratio"], child(key, "error_ratio"))
            rule = _replace(rule, error_ratio=ratio)
        if "error_code" in fields:
            code = self.code(fields["error_code"], child(key, "error_code"))
            rule = _replace(rule, error_code=code)
        return rule

    def code(self, node: yaml.Node, key: str) -> grpc.StatusCode:
        name = self.text(node, key)
        if name not in ERROR_CODES:
            hint = f" (write {name.upper()})" if name.upper() in ERROR_CODES else ""
            raise self.fail(
                node,
                key,
                f"{name!r} is not a gRPC status code name other than OK{hint}; "
                f"expected one of {', '.join(ERROR_CODES)}",
            )
        return grpc.StatusCode[name]

    def entries(
        self, node: yaml.Node, key: str, allowed: tuple[str, ...] | None = None
    ) -> Iterator[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, f"must be a mapping, got {kind(node)}")
        seen: set[str] = set()
        for key_node, value in node.value:
            name = self.text(key_node, f"{key} (a key)")
            if allowed is not None and name not in allowed:
                raise self.fail(
                    key_node, child(key, name), f"unknown key; expected {', '.join(allowed)}"
                )
            if name in seen:
                raise self.fail(key_node, child(key, name), "duplicate key")
            seen.add(name)
            yield name, value


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def node_text(node: yaml.Node) -> str:
    return repr(node.value) if isinstance(node, yaml.ScalarNode) else kind(node)


def _replace(rule: FaultRule, **changes: Any) -> FaultRule:
    return FaultRule(**{**rule.__dict__, **changes})


_Stamp = tuple[int, int, int]  # inode, size, modification time (ns)


class FaultFile:
    """`service`'s rules in the fault file at `path`, read again when it changes.

    `rules()` looks at the file at most every CHECK_INTERVAL_S (one stat of
    its inode, size and modification time) and parses it only when one of
    them changed. One event loop calls it, so it needs no lock.
    """

    def __init__(
        self, path: Path | str, service: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = Path(path)
        self.service = service
        self._clock = clock
        self._rules: Rules = {}
        self._stamp: _Stamp | None = None  # None: no file at the last look
        self._checked_at = clock()
        self.reload()
        if self._stamp is None:
            log.info("fault file %s does not exist (yet): no fault rules from it", self.path)

    def rules(self) -> Rules:
        now = self._clock()
        if now - self._checked_at >= CHECK_INTERVAL_S:
            self._checked_at = now
            self.reload()
        return self._rules

    def rule_for(self, method: str) -> FaultRule | None:
        """The file's rule for `method` (`/package.Service/Method`), if any."""
        rules = self.rules()
        if not rules:
            return None
        return rules.get(method.rpartition("/")[2]) or rules.get(EVERY_METHOD)

    def reload(self) -> None:
        """Reads the file again if it changed since the last look."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                log.info("fault file %s is gone: no fault rules from it", self.path)
                self._stamp, self._rules = None, {}
            return
        except OSError as error:
            self._keep(f"cannot stat: {error.strerror or error}")
            return
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if stamp == self._stamp:
            return
        # Recorded even when the file is bad: a bad file is reported once,
        # not every second, and looked at again when it changes.
        self._stamp = stamp
        try:
            text = self.path.read_text(encoding="utf-8")
            rules = parse_faults(text, self.service, str(self.path))
        except FaultFileError as error:
            self._keep(str(error))
            return
        except (OSError, UnicodeDecodeError) as error:
            self._keep(f"cannot read: {getattr(error, 'strerror', None) or error}")
            return
        self._rules = rules
        log.info("fault rules from %s: %d for %s", self.path, len(rules), self.service)

    def _keep(self, problem: str) -> None:
        log.warning(
            "fault file %s not applied, keeping the %d rule(s) in force: %s",
            self.path,
            len(self._rules),
            problem,
        )


class Faults:
    """The rule for each call: the file's, else the environment's."""

    def __init__(
        self,
        config: FaultConfig,
        file: FaultFile | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._default = config.rule()
        self._file = file
        self._rng = rng or random.Random()

    def rule_for(self, method: str) -> FaultRule | None:
        if self._file is not None:
            rule = self._file.rule_for(method)
            if rule is not None:
                return rule
        return self._default

    @contextlib.asynccontextmanager
    async def inject(self, method: str, context: Any) -> AsyncIterator[None]:
        """Waits and maybe fails the call as its rule says, then runs its body."""
        rule = self.rule_for(method)
        if rule is not None:
            if rule.delay_ms:
                # The handler's task is cancelled with the call (deadline or
                # caller gone), which ends this sleep early.
                await asyncio.sleep(rule.delay_ms / 1000)
            if rule.error_ratio and self._rng.random() < rule.error_ratio:
                await context.abort(rule.error_code, f"injected fault in {method}")
        yield
