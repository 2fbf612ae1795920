"""Reads compose.yaml into what local mode needs to start each service.

A service takes part in local mode when it has an `x-local` entry:

    x-local:
      command: [".venv/bin/python", "-m", "catalog"]   # run from the repo root
      environment: {CATALOG_DB_PATH: "{run_dir}/data/catalog.db"}  # overrides
      ready: grpc://catalog:50051        # or an http:// URL that answers 200
      public: true                       # optional: its gRPC port is plaintext (the gateway)

Every `name:port` in the environment and in `ready` (and `0.0.0.0:port` of a
service's own ports) becomes `127.0.0.1:<local port>`. A service's ports are
the container ports of its `ports:` (the few compose publishes on the host)
and of its `expose:` (the rest, reachable only inside the compose network);
local mode listens on all of them. The local port is the compose port by
default; tests pass other ones so they never collide with a stack the user
has up.

Variables in environment values and commands are substituted from the
caller's environment as `docker compose` does it (`${NAME}`,
`${NAME:-default}` when unset or empty, `${NAME-default}` when unset,
`$NAME`, and `$$` for a `$`), so a setting compose.yaml exposes this way
(`GATEWAY_ROUTES_FILE: ${GATEWAY_ROUTES_FILE:-...}`) is overridden by
`GATEWAY_ROUTES_FILE=... make up` exactly as by `... docker compose up`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "compose.yaml"

# (service, compose port) -> local port
PortMap = Mapping[tuple[str, int], int]


@dataclass(frozen=True)
class LocalService:
    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    ready: str  # grpc://127.0.0.1:PORT or http://127.0.0.1:PORT/path
    ports: Mapping[int, int]  # compose port -> local port
    run_dir: Path  # where its PID file, log and data go
    # Its gRPC port is plaintext whatever MESH_MTLS says (x-local `public:
    # true`, the gateway's); the others are probed as the service itself.
    public: bool = False

    @property
    def grpc_target(self) -> str | None:
        return self.ready.removeprefix("grpc://") if self.ready.startswith("grpc://") else None


def _container_ports(spec: Mapping[str, Any]) -> list[int]:
    ports = []
    for entry in spec.get("ports", []):
        ports.append(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    for entry in spec.get("expose", []):
        ports.append(int(str(entry).split("/")[0]))
    return ports


def _environment(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        return dict(str(item).split("=", 1) for item in value)
    return {str(k): str(v) for k, v in dict(value).items() if k != "<<"}


class Topology:
    """The services of compose.yaml that have an `x-local` entry."""

    def __init__(self, compose: Mapping[str, Any]) -> None:
        services = compose.get("services") or {}
        self._specs: dict[str, Mapping[str, Any]] = {
            name: spec for name, spec in services.items() if "x-local" in spec
        }
        self.compose_ports: dict[str, list[int]] = {
            name: _container_ports(spec) for name, spec in self._specs.items()
        }

    @classmethod
    def load(cls, path: Path = COMPOSE_FILE) -> Topology:
        return cls(yaml.safe_load(path.read_text()))

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def default_ports(self) -> dict[tuple[str, int], int]:
        return {(n, p): p for n, ports in self.compose_ports.items() for p in ports}

    def resolve(
        self,
        name: str,
        ports: PortMap,
        run_dir: Path,
        environ: Mapping[str, str] | None = None,
    ) -> LocalService:
        """`name` as a local process; `${...}` come from `environ` (default: os.environ)."""
        spec = self._specs[name]
        local = spec["x-local"]
        rewrite = _rewriter(name, ports)
        values = os.environ if environ is None else environ
        env = _environment(spec.get("environment")) | _environment(local.get("environment"))
        env = {
            k: rewrite(interpolate(v, values).replace("{run_dir}", str(run_dir)))
            for k, v in env.items()
        }
        return LocalService(
            name=name,
            command=tuple(interpolate(str(part), values) for part in local["command"]),
            environment=env,
            ready=rewrite(str(local["ready"])),
            ports={p: ports[(name, p)] for p in self.compose_ports[name]},
            run_dir=run_dir,
            public=bool(local.get("public", False)),
        )


def _rewriter(own_name: str, ports: PortMap) -> Callable[[str], str]:
    pattern = re.compile(r"\b([A-Za-z0-9_.-]+):(\d+)\b")

    def replace(match: re.Match[str]) -> str:
        host, port = match.group(1), int(match.group(2))
        if host in ("0.0.0.0", "localhost", "127.0.0.1"):
            host = own_name
        local = ports.get((host, port))
        return match.group(0) if local is None else f"127.0.0.1:{local}"

    return lambda value: pattern.sub(replace, value)


_VARIABLE = re.compile(
    r"\$(?:(?P<dollar>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """compose's variable substitution of `value` from `environ` (see the module docstring).

    An unset variable without a default becomes empty, as in compose.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("braced") or match.group("bare")
        current = environ.get(name)
        op = match.group("op")
        if op == ":-" and not current:
            return str(match.group("default"))
        if op == "-" and current is None:
            return str(match.group("default"))
        return current or ""

    return _VARIABLE.sub(replace, value)
