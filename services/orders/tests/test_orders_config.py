"""OrdersConfig from environment variables."""

from __future__ import annotations

import pytest

from mesh.config import ConfigError, Env
from orders.config import OrdersConfig
from orders.domain import Step

# mTLS is on by default and needs certificates; these tests are about the rest.
PLAINTEXT = {"MESH_MTLS": "off"}


def test_defaults() -> None:
    config = OrdersConfig.from_env(Env(PLAINTEXT))
    assert config.server.listen_addr == "0.0.0.0:50052"
    assert config.db_path == "orders.db"
    assert config.catalog_target == "127.0.0.1:50051"
    assert config.inventory_target == "127.0.0.1:50053"
    assert config.payments_target == "127.0.0.1:50054"
    assert config.upstream_timeout_s == 2.0
    assert config.step_retry_s == 10.0
    assert config.resume_interval_s == 5.0
    assert config.nats_url == "nats://127.0.0.1:4222"
    assert config.page_token_key is None
    assert config.log_level == "INFO"
    assert config.pause_after is None
    assert not config.server.faults.enabled


def test_values_from_the_environment() -> None:
    config = OrdersConfig.from_env(
        Env(
            {
                **PLAINTEXT,
                "GRPC_LISTEN_ADDR": "127.0.0.1:0",
                "ORDERS_DB_PATH": "/data/orders.db",
                "CATALOG_TARGET": "dns:///catalog:50051",
                "INVENTORY_TARGET": "inventory:50053",
                "PAYMENTS_TARGET": "payments:50054",
                "ORDERS_UPSTREAM_TIMEOUT_SECONDS": "0.5",
                "ORDERS_STEP_RETRY_SECONDS": "0",
                "ORDERS_RESUME_INTERVAL_SECONDS": "1.5",
                "NATS_URL": "tls://nats:4222",
                "ORDERS_PAGE_TOKEN_KEY": "00ff" * 8,
                "LOG_LEVEL": "debug",
                "ORDERS_TEST_PAUSE_AFTER_STEP": "charged",
            }
        )
    )
    assert config.server.listen_addr == "127.0.0.1:0"
    assert config.db_path == "/data/orders.db"
    assert config.catalog_target == "dns:///catalog:50051"
    assert config.inventory_target == "inventory:50053"
    assert config.payments_target == "payments:50054"
    assert config.upstream_timeout_s == 0.5
    assert config.step_retry_s == 0.0
    assert config.resume_interval_s == 1.5
    assert config.nats_url == "tls://nats:4222"
    assert config.page_token_key == bytes.fromhex("00ff" * 8)
    assert config.log_level == "DEBUG"
    assert config.pause_after is Step.CHARGED


@pytest.mark.parametrize("step", ["reserved", "charged", "compensating", "released"])
def test_every_intermediate_step_can_be_paused_after(step: str) -> None:
    config = OrdersConfig.from_env(Env({**PLAINTEXT, "ORDERS_TEST_PAUSE_AFTER_STEP": step}))
    assert config.pause_after is Step(step)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORDERS_TEST_PAUSE_AFTER_STEP", "placed"),
        ("ORDERS_TEST_PAUSE_AFTER_STEP", "confirmed"),
        ("ORDERS_TEST_PAUSE_AFTER_STEP", "cancelled"),
        ("ORDERS_TEST_PAUSE_AFTER_STEP", "CHARGED"),
        ("ORDERS_TEST_PAUSE_AFTER_STEP", "after-charge"),
        ("NATS_URL", "http://nats:4222"),
        ("NATS_URL", "nats:4222"),
        ("ORDERS_STEP_RETRY_SECONDS", "-1"),
        ("ORDERS_STEP_RETRY_SECONDS", "ten"),
        ("ORDERS_STEP_RETRY_SECONDS", "inf"),
        ("ORDERS_UPSTREAM_TIMEOUT_SECONDS", "0"),
        ("ORDERS_RESUME_INTERVAL_SECONDS", "0.01"),
        ("ORDERS_PAGE_TOKEN_KEY", "not hex"),
        ("ORDERS_PAGE_TOKEN_KEY", "00ff" * 7),
        ("GRPC_LISTEN_ADDR", "nowhere"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_variable_is_a_config_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        OrdersConfig.from_env(Env({**PLAINTEXT, name: value}))
