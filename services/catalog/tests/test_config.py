"""CatalogConfig from environment variables."""

from __future__ import annotations

import pytest

from catalog.config import CatalogConfig
from mesh.config import ConfigError, Env

# mTLS is on by default and needs certificates; these tests are about the rest.
PLAINTEXT = {"MESH_MTLS": "off"}


def test_defaults() -> None:
    config = CatalogConfig.from_env(Env(PLAINTEXT))
    assert config.server.listen_addr == "0.0.0.0:50051"
    assert config.db_path == "catalog.db"
    assert config.page_token_key is None
    assert config.log_level == "INFO"
    assert not config.server.faults.enabled


def test_values_from_the_environment() -> None:
    config = CatalogConfig.from_env(
        Env(
            {
                **PLAINTEXT,
                "GRPC_LISTEN_ADDR": "127.0.0.1:0",
                "CATALOG_DB_PATH": "/data/catalog.db",
                "CATALOG_PAGE_TOKEN_KEY": "00ff" * 8,
                "LOG_LEVEL": "debug",
                "FAULT_DELAY_MS": "5",
            }
        )
    )
    assert config.server.listen_addr == "127.0.0.1:0"
    assert config.db_path == "/data/catalog.db"
    assert config.page_token_key == bytes.fromhex("00ff" * 8)
    assert config.log_level == "DEBUG"
    assert config.server.faults.delay_ms == 5


@pytest.mark.parametrize("key", ["not hex at all", "abc", "00ff" * 7])
def test_a_bad_page_token_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="CATALOG_PAGE_TOKEN_KEY"):
        CatalogConfig.from_env(Env({**PLAINTEXT, "CATALOG_PAGE_TOKEN_KEY": key}))
