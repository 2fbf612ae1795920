"""NotificationsConfig from environment variables."""

from __future__ import annotations

import pytest

from mesh.config import ConfigError, Env
from notifications.config import NotificationsConfig

# mTLS is on by default and needs certificates; these tests are about the rest.
PLAINTEXT = {"MESH_MTLS": "off"}


def test_defaults() -> None:
    config = NotificationsConfig.from_env(Env(PLAINTEXT))
    assert config.server.listen_addr == "0.0.0.0:50055"
    assert config.db_path == "notifications.db"
    assert config.nats_url == "nats://127.0.0.1:4222"
    assert config.ack_wait_s == 30.0
    assert config.page_token_key is None
    assert config.log_level == "INFO"
    assert config.skip_ack is False


def test_every_variable_is_read() -> None:
    config = NotificationsConfig.from_env(
        Env(
            {
                **PLAINTEXT,
                "GRPC_LISTEN_ADDR": "127.0.0.1:0",
                "NOTIFICATIONS_DB_PATH": "/data/n.db",
                "NATS_URL": "nats://nats:4222",
                "NOTIFICATIONS_ACK_WAIT_SECONDS": "2.5",
                "NOTIFICATIONS_PAGE_TOKEN_KEY": "ab" * 16,
                "LOG_LEVEL": "debug",
                "NOTIFICATIONS_TEST_SKIP_ACK": "true",
            }
        )
    )
    assert config.server.listen_addr == "127.0.0.1:0"
    assert config.db_path == "/data/n.db"
    assert config.nats_url == "nats://nats:4222"
    assert config.ack_wait_s == 2.5
    assert config.page_token_key == bytes.fromhex("ab" * 16)
    assert config.log_level == "DEBUG"
    assert config.skip_ack is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOTIFICATIONS_PAGE_TOKEN_KEY", "not hex"),
        ("NOTIFICATIONS_PAGE_TOKEN_KEY", "abcd"),
        ("NATS_URL", "http://nats:4222"),
        ("NOTIFICATIONS_ACK_WAIT_SECONDS", "0"),
        ("NOTIFICATIONS_ACK_WAIT_SECONDS", "soon"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        NotificationsConfig.from_env(Env({**PLAINTEXT, name: value}))
