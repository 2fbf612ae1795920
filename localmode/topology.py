"""Reads compose.yaml into what local mode needs to start each service.

A service takes part in local mode when it has an `x-local` entry:

    x-local:
      command: [".venv/bin/python", "-m", "catalog"]   # run from the repo root
      environment: {CATALOG_DB_PATH: "{run_dir}/data/catalog.db"}  # overrides
      ready: grpc://catalog:50051        # or an http:// URL that answers 200
      public: true                       # optional: its gRPC port is plaintext (the gateway)

A service runs as `deploy.replicas` processes (compose's own key, so
`CATALOG_REPLICAS=3 make up` and `CATALOG_REPLICAS=3 docker compose up` both
give three catalogs; default 1). The first is named after the service, the
others `catalog-2`, `catalog-3`..., each with its own ports (the compose port
plus 100 per replica by default). Another service's `catalog:50051` becomes
a gRPC target listing every replica (`ipv4:127.0.0.1:50051,127.0.0.1:50151`),
which the clients' round_robin spreads calls over, as DNS does in compose.
`{run_secret}` in an environment value is a random key made once per run
directory: what replicas must share (a page-token key) without a secret in
this file.

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
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "compose.yaml"

# (service or replica name, compose port) -> local port
PortMap = Mapping[tuple[str, int], int]

# Replica k (from 2) listens on the compose port + (k - 1) * REPLICA_PORT_STEP by default.
REPLICA_PORT_STEP = 100


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


def replica_names(service: str, count: int) -> list[str]:
    """`catalog`, `catalog-2`, `catalog-3`... for `count` replicas."""
    return [service, *(f"{service}-{k}" for k in range(2, count + 1))]


def _replicas(name: str, spec: Mapping[str, Any], environ: Mapping[str, str]) -> int:
    raw = (spec.get("deploy") or {}).get("replicas", 1)
    text = interpolate(str(raw), environ).strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}: deploy.replicas must be a whole number from 1, got {text!r}")
    return int(text)


class Topology:
    """The services of compose.yaml that have an `x-local` entry, each as its replicas."""

    def __init__(
        self,
        compose: Mapping[str, Any],
        replicas: Mapping[str, int] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """`replicas` overrides `deploy.replicas` per service, whose `${...}`
        come from `environ` (default: os.environ)."""
        services = compose.get("services") or {}
        self._specs: dict[str, Mapping[str, Any]] = {
            name: spec for name, spec in services.items() if "x-local" in spec
        }
        values = os.environ if environ is None else environ
        counts = {name: _replicas(name, spec, values) for name, spec in self._specs.items()}
        counts.update(replicas or {})
        # Service -> its replicas' names; replica name -> its service.
        self.replicas: dict[str, list[str]] = {
            name: replica_names(name, counts[name]) for name in self._specs
        }
        self._service_of = {r: name for name, rs in self.replicas.items() for r in rs}
        self.compose_ports: dict[str, list[int]] = {
            replica: _container_ports(self._specs[name])
            for replica, name in self._service_of.items()
        }

    @classmethod
    def load(cls, path: Path = COMPOSE_FILE, replicas: Mapping[str, int] | None = None) -> Topology:
        return cls(yaml.safe_load(path.read_text()), replicas)

    @property
    def names(self) -> list[str]:
        """Every process to start: each service's replicas, in compose.yaml's order."""
        return [replica for replicas in self.replicas.values() for replica in replicas]

    def service_of(self, name: str) -> str:
        """The service a replica name belongs to (`catalog-2` -> `catalog`)."""
        return self._service_of[name]

    def default_ports(self) -> dict[tuple[str, int], int]:
        ports = {}
        for replicas in self.replicas.values():
            for k, replica in enumerate(replicas):
                for port in self.compose_ports[replica]:
                    ports[(replica, port)] = port + k * REPLICA_PORT_STEP
        return ports

    def resolve(
        self,
        name: str,
        ports: PortMap,
        run_dir: Path,
        environ: Mapping[str, str] | None = None,
    ) -> LocalService:
        """`name` (a service or one of its replicas) as a local process;
        `${...}` come from `environ` (default: os.environ)."""
        spec = self._specs[self.service_of(name)]
        local = spec["x-local"]
        rewrite = _rewriter(name, self.service_of(name), ports, self.replicas)
        values = os.environ if environ is None else environ
        env = _environment(spec.get("environment")) | _environment(local.get("environment"))
        placeholders = {"{run_dir}": str(run_dir)}
        if any("{run_secret}" in v for v in env.values()):
            placeholders["{run_secret}"] = run_secret(run_dir)
        env = {k: rewrite(interpolate(_fill(v, placeholders), values)) for k, v in env.items()}
        return LocalService(
            name=name,
            command=tuple(interpolate(str(part), values) for part in local["command"]),
            environment=env,
            ready=rewrite(str(local["ready"])),
            ports={p: ports[(name, p)] for p in self.compose_ports[name]},
            run_dir=run_dir,
            public=bool(local.get("public", False)),
        )


def _fill(value: str, placeholders: Mapping[str, str]) -> str:
    for placeholder, text in placeholders.items():
        value = value.replace(placeholder, text)
    return value


def run_secret(run_dir: Path) -> str:
    """A random hex key kept in `run_dir`: the same for every process of one run."""
    path = run_dir / "run-secret"
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _rewriter(
    own_name: str, own_service: str, ports: PortMap, replicas: Mapping[str, Sequence[str]]
) -> Callable[[str], str]:
    pattern = re.compile(r"\b([A-Za-z0-9_.-]+):(\d+)\b")

    def replace(match: re.Match[str]) -> str:
        host, port = match.group(1), int(match.group(2))
        if host in ("0.0.0.0", "localhost", "127.0.0.1", own_service):
            names = [own_name]  # itself: this replica's own port
        else:
            names = list(replicas.get(host, [host]))
        local = [ports[(name, port)] for name in names if (name, port) in ports]
        if not local:
            return match.group(0)
        if len(local) == 1:
            return f"127.0.0.1:{local[0]}"
        # Several replicas: a target gRPC's ipv4 resolver turns into all of them.
        return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in local)

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
