"""The catalog's configuration, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.config import Env
from mesh.server import ServerConfig


@dataclass(frozen=True)
class CatalogConfig:
    server: ServerConfig
    # SQLite file; created and seeded when missing.
    db_path: str
    # HMAC key of page tokens, shared by replicas so a token from one works on
    # another. None: a random key per process.
    page_token_key: bytes | None
    log_level: str

    @classmethod
    def from_env(cls, env: Env) -> CatalogConfig:
        return cls(
            server=ServerConfig.from_env(env, default_addr="0.0.0.0:50051"),
            db_path=env.text("CATALOG_DB_PATH", "catalog.db"),
            page_token_key=env.hex_key("CATALOG_PAGE_TOKEN_KEY"),
            log_level=env.log_level(),
        )
