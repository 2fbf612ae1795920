"""GatewayConfig from environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DEMO_API_KEYS, GatewayConfig, override_variable, parse_api_keys
from gateway.routes import Auth, Route
from mesh.certs import cert_path, ensure, key_path
from mesh.config import ConfigError, Env

# mTLS is on by default and needs certificates; these tests are about the rest.
PLAINTEXT = {"MESH_MTLS": "off"}


def test_defaults() -> None:
    config = GatewayConfig.from_env(Env(PLAINTEXT))
    assert config.server.listen_addr == "0.0.0.0:8080"
    assert [route.service for route in config.routes] == [
        "shop.catalog.v1.CatalogService",
        "shop.orders.v1.OrdersService",
        "shop.notifications.v1.NotificationsService",
    ]
    assert config.max_message_bytes == 4 * 1024 * 1024
    assert config.default_timeout_s is None
    assert config.auth.issuer == "shopmesh-demo"
    assert config.auth.audience == "shopmesh"
    assert len(config.auth.jwt_key) >= 32
    assert config.auth.api_keys == parse_api_keys(DEMO_API_KEYS)
    assert config.rate.enabled
    assert (config.rate.per_second, config.rate.burst) == (100.0, 200)
    assert config.access_log
    assert config.log_level == "INFO"


def test_values_from_the_environment(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {service: test.v1.Echo, upstream: echo:7000, auth: none}\n")
    config = GatewayConfig.from_env(
        Env(
            {
                **PLAINTEXT,
                "GRPC_LISTEN_ADDR": "127.0.0.1:0",
                "GATEWAY_ROUTES_FILE": str(routes),
                "GATEWAY_MAX_MESSAGE_BYTES": "1024",
                "GATEWAY_DEFAULT_TIMEOUT_SECONDS": "2.5",
                "GATEWAY_JWT_KEY": "k" * 40,
                "GATEWAY_JWT_ISSUER": "me",
                "GATEWAY_JWT_AUDIENCE": "you",
                "GATEWAY_API_KEYS": "aaaaaaaaaaaaaaaa=alice, bbbbbbbbbbbbbbbb-_ = bob",
                "GATEWAY_RATE_PER_SECOND": "0",
                "GATEWAY_RATE_BURST": "3",
                "GATEWAY_ACCESS_LOG": "false",
                "LOG_LEVEL": "debug",
            }
        )
    )
    assert config.routes == (Route("test.v1.Echo", "echo:7000", Auth.NONE),)
    assert config.max_message_bytes == 1024
    assert config.default_timeout_s == 2.5
    assert config.auth.jwt_key == b"k" * 40
    assert (config.auth.issuer, config.auth.audience) == ("me", "you")
    assert config.auth.api_keys == {"aaaaaaaaaaaaaaaa": "alice", "bbbbbbbbbbbbbbbb-_": "bob"}
    assert not config.rate.enabled
    assert config.rate.burst == 3
    assert not config.access_log
    assert config.log_level == "DEBUG"


def test_a_relative_routes_file_is_relative_to_the_repository() -> None:
    config = GatewayConfig.from_env(
        Env({**PLAINTEXT, "GATEWAY_ROUTES_FILE": "services/gateway/routes.yaml"})
    )
    assert len(config.routes) == 3


def test_api_keys_can_be_turned_off() -> None:
    assert (
        GatewayConfig.from_env(Env({**PLAINTEXT, "GATEWAY_API_KEYS": "None"})).auth.api_keys == {}
    )


def test_an_upstream_host_variable_replaces_its_targets() -> None:
    assert override_variable("catalog") == "GATEWAY_UPSTREAM_CATALOG"
    assert override_variable("my-svc.internal") == "GATEWAY_UPSTREAM_MY_SVC_INTERNAL"
    config = GatewayConfig.from_env(
        Env(
            {
                **PLAINTEXT,
                "GATEWAY_UPSTREAM_CATALOG": "127.0.0.1:6001",
                "GATEWAY_UPSTREAM_PAYMENTS": "x:1",
            }
        )
    )
    assert [route.upstream for route in config.routes] == [
        "127.0.0.1:6001",
        "orders:50052",
        "notifications:50055",
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_ROUTES_FILE", "/no/such/routes.yaml"),
        ("GATEWAY_MAX_MESSAGE_BYTES", "0"),
        ("GATEWAY_MAX_MESSAGE_BYTES", "4MiB"),
        ("GATEWAY_DEFAULT_TIMEOUT_SECONDS", "-1"),
        ("GATEWAY_JWT_KEY", "too-short"),
        ("GATEWAY_API_KEYS", "short=alice"),
        ("GATEWAY_API_KEYS", "aaaaaaaaaaaaaaaa"),
        ("GATEWAY_API_KEYS", "aaaaaaaaaaaaaaaa=has space"),
        ("GATEWAY_API_KEYS", "aaaaaaaaaaaaaaaa=a,aaaaaaaaaaaaaaaa=b"),
        ("GATEWAY_API_KEYS", "aaaa.aaaa.aaaaaaaa=alice"),
        ("GATEWAY_RATE_PER_SECOND", "-5"),
        ("GATEWAY_RATE_PER_SECOND", "fast"),
        ("GATEWAY_RATE_BURST", "0"),
        ("GATEWAY_ACCESS_LOG", "maybe"),
        ("GATEWAY_UPSTREAM_ORDERS", "orders"),
        ("GRPC_LISTEN_ADDR", "8080"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable) as error:
        GatewayConfig.from_env(Env({**PLAINTEXT, variable: value}))
    if variable == "GATEWAY_API_KEYS":
        assert "aaaaaaaaaaaaaaaa" not in str(error.value), "a key is a secret"


def _tls_env(cert: str | None, key: str | None) -> Env:
    values = {**PLAINTEXT}
    if cert is not None:
        values["GATEWAY_TLS_CERT_FILE"] = cert
    if key is not None:
        values["GATEWAY_TLS_KEY_FILE"] = key
    return Env(values)


def test_a_public_certificate_is_read_with_its_key(tmp_path: Path) -> None:
    ensure(tmp_path)
    cert, key = cert_path(tmp_path, "gateway"), key_path(tmp_path, "gateway")
    config = GatewayConfig.from_env(_tls_env(str(cert), str(key)))
    assert config.public_tls is not None
    assert config.public_tls.cert_pem == cert.read_bytes()
    assert GatewayConfig.from_env(Env(PLAINTEXT)).public_tls is None


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("gateway.pem", None, "GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together"),
        (None, "gateway.key", "GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together"),
        ("missing.pem", "gateway.key", "GATEWAY_TLS_CERT_FILE: cannot read"),
        ("gateway.key", "gateway.key", "GATEWAY_TLS_CERT_FILE: .* holds no PEM certificate"),
        ("gateway.pem", "gateway.pem", "GATEWAY_TLS_KEY_FILE: .* holds no unencrypted PEM"),
        ("gateway.pem", "catalog.key", "GATEWAY_TLS_KEY_FILE: .* is not the key of"),
    ],
)
def test_a_bad_public_certificate_is_named(
    tmp_path: Path, cert: str | None, key: str | None, message: str
) -> None:
    ensure(tmp_path)
    env = _tls_env(
        None if cert is None else str(tmp_path / cert),
        None if key is None else str(tmp_path / key),
    )
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.from_env(env)
