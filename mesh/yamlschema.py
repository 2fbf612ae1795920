"""What the mesh's schema-checked YAML files share (mesh/policy.yaml,
mesh/traffic.yaml): finding the file, reading it into nodes, and errors that
say `<file>:<line>: <key>: <problem>`.

Each reader composes nodes, not Python values: they keep each value's line
and YAML type, and a duplicate key, which SafeLoader would let overwrite the
first.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from mesh.config import ConfigError, Env

__all__ = [
    "FLOAT",
    "INT",
    "REPO_ROOT",
    "STR",
    "NodeChecker",
    "SchemaError",
    "child",
    "compose",
    "config_file",
    "kind",
    "read",
]

# mesh/yamlschema.py -> the repository root (or the image's /app).
REPO_ROOT = Path(__file__).resolve().parents[1]
STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
_SCALARS = yaml.constructor.SafeConstructor()
_KINDS = {
    STR: "a string",
    INT: "an integer",
    FLOAT: "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
}


class SchemaError(ConfigError):
    """A file is unreadable or breaks its schema.

    The message is `<source>:<line>: <key>: <problem>`; the parts are kept as
    attributes for tests and tools.
    """

    def __init__(self, source: str, line: int, key: str, problem: str) -> None:
        super().__init__(f"{source}:{line}: {key}: {problem}")
        self.source = source
        self.line = line
        self.key = key
        self.problem = problem


def config_file(env: Env, variable: str, default: Path) -> Path:
    """The file `variable` names (relative to the repository root), or `default`."""
    raw = env.optional(variable)
    if raw is None:
        return default
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


def read(path: Path | str, error: type[SchemaError]) -> str:
    """The file's text; `error` says why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as failure:
        problem = getattr(failure, "strerror", None) or str(failure)
        raise error(str(path), 0, "(file)", f"cannot read: {problem}") from None


def compose(text: str, source: str, error: type[SchemaError], expected: str) -> yaml.Node:
    """The document's root node; `error` for invalid YAML or an empty document
    (`expected` says what it should hold)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as failure:
        mark = failure.problem_mark or failure.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise error(source, line, "(document)", f"not valid YAML: {failure.problem}") from None
    except yaml.YAMLError as failure:
        raise error(source, 0, "(document)", f"not valid YAML: {failure}") from None
    if root is None:
        raise error(source, 1, "(document)", f"empty; expected {expected}")
    return root


class NodeChecker:
    """Walks a composed document; every `fail` names the node's line and key.

    A file's checker subclasses it and sets `error`, the file's SchemaError.
    """

    error: type[SchemaError] = SchemaError

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node, key: str, problem: str) -> SchemaError:
        return self.error(self.source, node.start_mark.line + 1, key, problem)

    def items(self, node: yaml.Node, key: str, *, empty_ok: bool = False) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key, f"must be a list, got {kind(node)}")
        if not node.value and not empty_ok:
            raise self.fail(node, key, "must not be an empty list")
        return list(node.value)

    def text(self, node: yaml.Node, key: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != STR or not node.value.strip():
            raise self.fail(node, key, f"must be a non-empty string, got {kind(node)}")
        return str(node.value)

    def integer(self, node: yaml.Node, key: str, low: int, high: int | None = None) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != INT:
            raise self.fail(node, key, f"must be an integer, got {kind(node)}")
        value = int(_SCALARS.construct_yaml_int(node))
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise self.fail(node, key, f"must be {span}, got {value}")
        return value

    def number(self, node: yaml.Node, key: str) -> float:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (INT, FLOAT):
            raise self.fail(node, key, f"must be a number, got {kind(node)}")
        value = float(
            _SCALARS.construct_yaml_int(node)
            if node.tag == INT
            else _SCALARS.construct_yaml_float(node)
        )
        if not math.isfinite(value):
            raise self.fail(node, key, f"must be a finite number, got {node.value}")
        return value

    def ratio(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key)
        if not 0 <= value <= 1:
            raise self.fail(node, key, f"must be within [0, 1], got {value:g}")
        return value


def child(key: str, name: str) -> str:
    """The key of `name` inside `key`, as errors write it."""
    return name if key == "(document)" else f"{key}.{name}"


def kind(node: yaml.Node) -> str:
    """What a node is, in words, for an error that says what was expected instead."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode) and node.tag == STR and not node.value.strip():
        return "an empty string"
    return _KINDS.get(node.tag, f"a {node.tag} value")
