"""The console's settings, from the environment.

- CONSOLE_LISTEN_ADDR: where the page and its API are served (0.0.0.0:8088).
- CONSOLE_TARGETS: what to watch, whitespace-separated entries
  `<service>=<metrics>|<health>`: the service's Prometheus endpoint and its
  gRPC health port (the health-only plaintext one, MESH_HEALTH_PROBE_ADDRESS,
  where the gRPC port is mTLS). Each is `host:port`, whose name may resolve to
  several replicas (compose's DNS, a headless Service), or
  `ipv4:host:port,host:port` (local mode's replicas, in the same order).
- JAEGER_QUERY_URL: Jaeger's query API (http://127.0.0.1:16686).
- JAEGER_UI_URL: where a user's browser reaches Jaeger's own UI, for links;
  unset: no link (local mode's Jaeger serves no UI).
- MESH_FAULTS_FILE: the fault file the services watch, which the page edits
  (faults/faults.yaml).
- CONSOLE_SCRAPE_TIMEOUT_SECONDS: how long a source may take (1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mesh.config import ConfigError, Env
from mesh.faultctl import DEFAULT_FILE
from mesh.yamlschema import REPO_ROOT
from tracing.jaeger import DEFAULT_QUERY_URL


@dataclass(frozen=True)
class Target:
    service: str
    metrics: str
    health: str


@dataclass(frozen=True)
class ConsoleConfig:
    listen_addr: str
    targets: tuple[Target, ...]
    jaeger_query_url: str
    jaeger_ui_url: str | None
    faults_file: Path
    timeout_s: float

    @classmethod
    def from_env(cls, env: Env) -> ConsoleConfig:
        faults = env.optional("MESH_FAULTS_FILE")
        path = Path(faults) if faults else DEFAULT_FILE
        return cls(
            listen_addr=env.address("CONSOLE_LISTEN_ADDR", "0.0.0.0:8088"),
            targets=parse_targets(env.optional("CONSOLE_TARGETS") or ""),
            jaeger_query_url=(env.optional("JAEGER_QUERY_URL") or DEFAULT_QUERY_URL).rstrip("/"),
            jaeger_ui_url=(env.optional("JAEGER_UI_URL") or "").rstrip("/") or None,
            faults_file=path if path.is_absolute() else REPO_ROOT / path,
            timeout_s=env.number("CONSOLE_SCRAPE_TIMEOUT_SECONDS", 1.0, minimum=0.05),
        )


def parse_targets(raw: str) -> tuple[Target, ...]:
    targets = []
    for entry in raw.split():
        service, equals, rest = entry.partition("=")
        metrics, bar, health = rest.partition("|")
        if not (equals and bar and service and metrics and health):
            raise ConfigError(
                f"CONSOLE_TARGETS: {entry!r} is not <service>=<metrics address>|<health address>"
            )
        targets.append(Target(service=service, metrics=metrics, health=health))
    return tuple(targets)
