"""The notifications service's configuration, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.config import ConfigError, Env
from mesh.server import ServerConfig


@dataclass(frozen=True)
class NotificationsConfig:
    server: ServerConfig
    # SQLite file; created when missing.
    db_path: str
    # NATS server with JetStream, where orders publishes its events.
    nats_url: str
    # How long JetStream waits for our ack before it redelivers a message.
    ack_wait_s: float
    # HMAC key of page tokens, shared by replicas so a token from one works on
    # another. None: a random key per process.
    page_token_key: bytes | None
    log_level: str
    # Test only (NOTIFICATIONS_TEST_SKIP_ACK, never set in a deployment): store
    # each notification but never ack its message, so an end-to-end test can
    # kill the process between the two steps for certain.
    skip_ack: bool = False

    @classmethod
    def from_env(cls, env: Env) -> NotificationsConfig:
        nats_url = env.text("NATS_URL", "nats://127.0.0.1:4222")
        if not nats_url.startswith(("nats://", "tls://")):
            raise ConfigError(f"NATS_URL must be a nats:// or tls:// URL, got {nats_url!r}")
        return cls(
            server=ServerConfig.from_env(env, default_addr="0.0.0.0:50055"),
            db_path=env.text("NOTIFICATIONS_DB_PATH", "notifications.db"),
            nats_url=nats_url,
            ack_wait_s=env.number("NOTIFICATIONS_ACK_WAIT_SECONDS", 30.0, minimum=1.0),
            page_token_key=env.hex_key("NOTIFICATIONS_PAGE_TOKEN_KEY"),
            log_level=env.log_level(),
            skip_ack=env.flag("NOTIFICATIONS_TEST_SKIP_ACK", False),
        )
