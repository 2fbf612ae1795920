"""compose.yaml as local mode reads it: x-local entries and port rewriting."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from localmode.processes import Stack, free_port, port_in_use
from localmode.topology import Topology, interpolate

COMPOSE = {
    "services": {
        "jaeger": {
            "image": "jaeger",
            "ports": ["16686:16686", "4317:4317"],
            "expose": ["13133"],
            "environment": {"JAEGER_OTLP_GRPC_ENDPOINT": "0.0.0.0:4317"},
            "x-local": {"command": ["jaeger"], "ready": "http://jaeger:13133/status"},
        },
        "catalog": {
            "ports": ["50051:50051"],
            "environment": {
                "GRPC_LISTEN_ADDR": "0.0.0.0:50051",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317",
                "DB": "/data/catalog.db",
            },
            "x-local": {
                "command": ["python", "-m", "catalog"],
                "environment": {"DB": "{run_dir}/data/catalog.db"},
                "ready": "grpc://catalog:50051",
            },
        },
        "docker-only": {"image": "something", "ports": ["9999:9999"]},
    }
}


def test_only_services_with_x_local_take_part() -> None:
    assert Topology(COMPOSE).names == ["jaeger", "catalog"]


def test_default_ports_are_the_compose_ports() -> None:
    ports = Topology(COMPOSE).default_ports()
    assert ports == {
        ("jaeger", 16686): 16686,
        ("jaeger", 4317): 4317,
        ("jaeger", 13133): 13133,
        ("catalog", 50051): 50051,
    }


def test_addresses_are_rewritten_to_loopback_with_the_given_ports(tmp_path: Path) -> None:
    topology = Topology(COMPOSE)
    ports = {key: 40000 + i for i, key in enumerate(topology.default_ports())}
    catalog = topology.resolve("catalog", ports, tmp_path)
    assert catalog.environment["GRPC_LISTEN_ADDR"] == f"127.0.0.1:{ports['catalog', 50051]}"
    assert catalog.environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
        f"http://127.0.0.1:{ports['jaeger', 4317]}"
    )
    assert catalog.environment["DB"] == f"{tmp_path}/data/catalog.db"  # x-local wins
    assert catalog.grpc_target == f"127.0.0.1:{ports['catalog', 50051]}"
    jaeger = topology.resolve("jaeger", ports, tmp_path)
    assert jaeger.ready == f"http://127.0.0.1:{ports['jaeger', 13133]}/status"
    assert jaeger.grpc_target is None


def test_the_real_compose_file_has_distinct_ports() -> None:
    ports = list(Topology.load().default_ports().values())
    assert len(ports) == len(set(ports))


def test_a_failing_service_reports_its_log(tmp_path: Path) -> None:
    topology = Topology(
        {
            "services": {
                "broken": {
                    "ports": ["1:1"],
                    "x-local": {
                        "command": ["python3", "-c", "import sys; print('boom'); sys.exit(3)"],
                        "ready": "grpc://broken:1",
                    },
                }
            }
        }
    )
    service = topology.resolve("broken", {("broken", 1): 1}, tmp_path)
    stack = Stack(tmp_path)
    with pytest.raises(RuntimeError, match="exited with status 3") as error:
        stack.start(service, timeout_s=10)
    assert "boom" in str(error.value)
    assert stack.recorded() == []


def test_down_stops_what_up_started(tmp_path: Path) -> None:
    port = free_port()
    topology = Topology(
        {
            "services": {
                "web": {
                    "ports": [f"{port}:{port}"],
                    "x-local": {
                        "command": ["python3", "-m", "http.server", str(port), "-b", "127.0.0.1"],
                        "ready": f"http://web:{port}/",
                    },
                }
            }
        }
    )
    service = topology.resolve("web", topology.default_ports(), tmp_path)
    stack = Stack(tmp_path)
    stack.start(service, timeout_s=20)
    pid = stack.pid("web")
    assert pid is not None
    assert port_in_use(port)
    assert stack.stop() == ["web"]
    assert stack.pid("web") is None
    assert not port_in_use(port)
    assert stack.recorded() == []
    assert Stack(tmp_path).stop() == []  # nothing left for `make down`


def test_variables_are_substituted_as_compose_does() -> None:
    environ = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET:-default}/$SET/${SET}", environ) == "value/value/value"
    assert interpolate("${UNSET:-default} ${EMPTY:-default}", environ) == "default default"
    assert interpolate("${UNSET-default} [${EMPTY-default}]", environ) == "default []"
    assert interpolate("[${UNSET}] $$SET ${UNSET:-a:b/c.yaml}", environ) == "[] $SET a:b/c.yaml"


def test_the_gateway_routes_file_defaults_and_follows_the_environment(tmp_path: Path) -> None:
    topology = Topology.load()
    ports = topology.default_ports()
    default = topology.resolve("gateway", ports, tmp_path, environ={})
    assert default.environment["GATEWAY_ROUTES_FILE"] == "services/gateway/routes.yaml"
    assert default.environment["GATEWAY_UPSTREAM_ORDERS"] == "127.0.0.1:50052"
    chosen = topology.resolve(
        "gateway", ports, tmp_path, environ={"GATEWAY_ROUTES_FILE": "/r.yaml"}
    )
    assert chosen.environment["GATEWAY_ROUTES_FILE"] == "/r.yaml"


def test_a_routes_file_set_for_make_up_reaches_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `GATEWAY_ROUTES_FILE=... make up` runs it: from this process's environment
    through compose.yaml to the gateway process, which then routes only catalog."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n"
        "  - service: shop.catalog.v1.CatalogService\n"
        "    upstream: catalog:50051\n"
        "    auth: none\n"
    )
    monkeypatch.setenv("GATEWAY_ROUTES_FILE", str(routes))
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    topology = Topology.load()
    ports = {key: free_port() for key in topology.default_ports()}
    gateway = topology.resolve("gateway", ports, tmp_path)
    stack = Stack(tmp_path)
    stack.start(gateway, timeout_s=30)
    try:
        with grpc.insecure_channel(str(gateway.grpc_target)) as channel:
            list_orders = channel.unary_unary(
                "/shop.orders.v1.OrdersService/ListOrders", None, None
            )
            with pytest.raises(grpc.RpcError) as error:
                list_orders(b"", timeout=10)
    finally:
        stack.stop()
    # The default routes would answer UNAUTHENTICATED: orders needs a token there.
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


REPLICATED = {
    "services": {
        "catalog": {
            "deploy": {"replicas": "${CATALOG_REPLICAS:-1}"},
            "expose": ["50051"],
            "environment": {"GRPC_LISTEN_ADDR": "0.0.0.0:50051"},
            "x-local": {
                "command": ["catalog"],
                "environment": {"KEY": "${KEY:-{run_secret}}"},
                "ready": "grpc://catalog:50051",
            },
        },
        "orders": {
            "expose": ["50052"],
            "environment": {"CATALOG_TARGET": "catalog:50051"},
            "x-local": {"command": ["orders"], "ready": "grpc://orders:50052"},
        },
    }
}


def test_replicas_get_their_own_ports_and_callers_a_list_of_them(tmp_path: Path) -> None:
    topology = Topology(REPLICATED, environ={"CATALOG_REPLICAS": "3"})
    assert topology.names == ["catalog", "catalog-2", "catalog-3", "orders"]
    assert topology.service_of("catalog-3") == "catalog"
    ports = topology.default_ports()
    assert [ports[(name, 50051)] for name in topology.replicas["catalog"]] == [50051, 50151, 50251]
    first = topology.resolve("catalog", ports, tmp_path)
    assert first.environment["GRPC_LISTEN_ADDR"] == "127.0.0.1:50051"
    second = topology.resolve("catalog-2", ports, tmp_path)
    assert second.environment["GRPC_LISTEN_ADDR"] == "127.0.0.1:50151"
    assert second.ready == "grpc://127.0.0.1:50151"
    orders = topology.resolve("orders", ports, tmp_path)
    assert orders.environment["CATALOG_TARGET"] == (
        "ipv4:127.0.0.1:50051,127.0.0.1:50151,127.0.0.1:50251"
    )


def test_replicas_share_the_run_secret_and_an_override_wins(tmp_path: Path) -> None:
    topology = Topology(REPLICATED, replicas={"catalog": 2}, environ={})
    ports = topology.default_ports()
    first, second = (
        topology.resolve(n, ports, tmp_path, environ={}) for n in ("catalog", "catalog-2")
    )
    assert len(first.environment["KEY"]) == 64
    assert first.environment["KEY"] == second.environment["KEY"]
    chosen = topology.resolve("catalog", ports, tmp_path, environ={"KEY": "ab" * 16})
    assert chosen.environment["KEY"] == "ab" * 16
    assert (
        topology.resolve("catalog", ports, tmp_path / "other", environ={}).environment["KEY"]
        != first.environment["KEY"]
    )


def test_a_bad_replica_count_names_the_service() -> None:
    with pytest.raises(ValueError, match=r"catalog: deploy\.replicas must be a whole number"):
        Topology(REPLICATED, environ={"CATALOG_REPLICAS": "two"})
