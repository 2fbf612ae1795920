"""The orders service's configuration, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.config import ConfigError, Env
from mesh.server import ServerConfig
from mesh.traffic import TrafficPolicy
from mesh.traffic_file import load_traffic_from_env
from orders.domain import Step

# Steps a test may hold a saga after (never set in a deployment).
_PAUSABLE = {step.value: step for step in Step if not step.terminal and step is not Step.PLACED}


@dataclass(frozen=True)
class OrdersConfig:
    server: ServerConfig
    # SQLite file; created when missing.
    db_path: str
    # Upstreams as gRPC targets (`host:port`, `dns:///host:port`).
    catalog_target: str
    inventory_target: str
    payments_target: str
    # Deadline of each upstream call.
    upstream_timeout_s: float
    # How long a step retries a transport failure before compensating.
    step_retry_s: float
    # How often unfinished sagas (stalled on a silent upstream) are retried.
    resume_interval_s: float
    # NATS server with JetStream, where the outbox relay publishes.
    nats_url: str
    # HMAC key of page tokens, shared by replicas. None: random per process.
    page_token_key: bytes | None
    log_level: str
    # Test only: hold every saga after this step so a test can kill the process there.
    pause_after: Step | None
    # How its upstream channels retry, time out and break (mesh/traffic.yaml).
    traffic: TrafficPolicy

    @classmethod
    def from_env(cls, env: Env) -> OrdersConfig:
        nats_url = env.text("NATS_URL", "nats://127.0.0.1:4222")
        if not nats_url.startswith(("nats://", "tls://")):
            raise ConfigError(f"NATS_URL must be a nats:// or tls:// URL, got {nats_url!r}")
        pause = env.optional("ORDERS_TEST_PAUSE_AFTER_STEP")
        if pause is not None and pause not in _PAUSABLE:
            raise ConfigError(
                f"ORDERS_TEST_PAUSE_AFTER_STEP must be one of {', '.join(_PAUSABLE)}, got {pause!r}"
            )
        return cls(
            server=ServerConfig.from_env(env, default_addr="0.0.0.0:50052"),
            db_path=env.text("ORDERS_DB_PATH", "orders.db"),
            catalog_target=env.text("CATALOG_TARGET", "127.0.0.1:50051"),
            inventory_target=env.text("INVENTORY_TARGET", "127.0.0.1:50053"),
            payments_target=env.text("PAYMENTS_TARGET", "127.0.0.1:50054"),
            upstream_timeout_s=env.number("ORDERS_UPSTREAM_TIMEOUT_SECONDS", 2.0, minimum=0.01),
            step_retry_s=env.number("ORDERS_STEP_RETRY_SECONDS", 10.0, minimum=0.0),
            resume_interval_s=env.number("ORDERS_RESUME_INTERVAL_SECONDS", 5.0, minimum=0.1),
            nats_url=nats_url,
            page_token_key=env.hex_key("ORDERS_PAGE_TOKEN_KEY"),
            log_level=env.log_level(),
            pause_after=None if pause is None else _PAUSABLE[pause],
            traffic=load_traffic_from_env(env),
        )
