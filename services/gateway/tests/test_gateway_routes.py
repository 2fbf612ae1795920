"""The routes file: the default one, and every way a file can be wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import DEFAULT_ROUTES_FILE, REPO_ROOT
from gateway.routes import Auth, Route, load_routes, parse_routes
from mesh.config import ConfigError


def test_the_default_routes_are_the_public_services() -> None:
    routes = load_routes(REPO_ROOT / DEFAULT_ROUTES_FILE)
    assert routes == (
        Route("shop.catalog.v1.CatalogService", "catalog:50051", Auth.NONE),
        Route("shop.orders.v1.OrdersService", "orders:50052", Auth.REQUIRED),
        Route("shop.notifications.v1.NotificationsService", "notifications:50055", Auth.REQUIRED),
    )
    services = " ".join(route.service for route in routes)
    assert "inventory" not in services
    assert "payments" not in services


def test_auth_defaults_to_required() -> None:
    (route,) = parse_routes({"routes": [{"service": "a.v1.S", "upstream": "a:1"}]}, "f")
    assert route.auth is Auth.REQUIRED


def test_any_grpc_target_is_an_upstream() -> None:
    entries = [
        {"service": "a.v1.S", "upstream": "dns:///a:1", "auth": "none"},
        {"service": "Bare", "upstream": "unix:///run/a.sock", "auth": "none"},
    ]
    routes = parse_routes({"routes": entries}, "f")
    assert [route.upstream for route in routes] == ["dns:///a:1", "unix:///run/a.sock"]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (None, "one key, 'routes'"),
        ({"route": []}, "one key, 'routes'"),
        ({"routes": []}, "non-empty list"),
        ({"routes": "a.v1.S"}, "non-empty list"),
        ({"routes": ["a.v1.S"]}, r"routes\[0\]: expected a mapping"),
        ({"routes": [{"service": "a.v1.S", "upstream": "a:1", "auht": "none"}]}, "auht"),
        ({"routes": [{"upstream": "a:1"}]}, r"routes\[0\]\.service: required"),
        ({"routes": [{"service": "a.v1.S"}]}, r"routes\[0\]\.upstream: required"),
        ({"routes": [{"service": "a.v1.S", "upstream": 50051}]}, "upstream: required"),
        ({"routes": [{"service": "/a.v1.S/Get", "upstream": "a:1"}]}, "not a fully qualified"),
        ({"routes": [{"service": "a..S", "upstream": "a:1"}]}, "not a fully qualified"),
        ({"routes": [{"service": "a.v1.S", "upstream": "a :1"}]}, "not a gRPC target"),
        ({"routes": [{"service": "a.v1.S", "upstream": "a:1", "auth": "maybe"}]}, "'maybe'"),
        ({"routes": [{"service": "a.v1.S", "upstream": "a:1", "auth": False}]}, "none' or"),
        ({"routes": [{"service": "grpc.health.v1.Health", "upstream": "a:1"}]}, "itself"),
        (
            {"routes": [{"service": "grpc.reflection.v1alpha.ServerReflection", "upstream": "a"}]},
            "itself",
        ),
        (
            {"routes": [{"service": "a.v1.S", "upstream": "a:1"}] * 2},
            r"routes\[1\]: a.v1.S is routed twice",
        ),
    ],
)
def test_a_bad_document_names_the_file_and_the_entry(document: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as error:
        parse_routes(document, "GATEWAY_ROUTES_FILE (r.yaml)")
    assert str(error.value).startswith("GATEWAY_ROUTES_FILE (r.yaml): ")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"GATEWAY_ROUTES_FILE \(.*nope.yaml\): cannot read"):
        load_routes(tmp_path / "nope.yaml")


def test_a_file_that_is_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_routes(path)


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("shop.catalog.v1.CatalogService", "catalog"),
        ("shop.notifications.v2.NotificationsService", "notifications"),
        ("test.echo.v1.Echo", None),
        ("shop.Lonely", None),
    ],
)
def test_the_mesh_service_is_read_from_the_contract_package(
    service: str, expected: str | None
) -> None:
    # With mTLS on, the upstream must prove this identity (mesh.channels).
    assert Route(service, "127.0.0.1:1", Auth.NONE).mesh_service == expected
