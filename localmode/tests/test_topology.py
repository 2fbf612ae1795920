"""compose.yaml as local mode reads it: x-local entries and port rewriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from localmode.processes import Stack, free_port, port_in_use
from localmode.topology import Topology

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
