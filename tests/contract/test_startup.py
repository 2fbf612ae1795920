"""How every service fails at start, whatever its language: the same rules.

A malformed variable ends the process with status 2 and one line naming it
(`configuration error: <VARIABLE> ...`);
a port that cannot be bound with status 1 naming the address; never a stack
trace (Python's `Traceback`, Go's `panic:`/`goroutine`, Node's `    at `
frames).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from localmode.topology import REPO_ROOT, Topology

STACK_TRACE_MARKS = ("panic:", "goroutine ", "\n    at ", "Traceback")


def start(name: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    topology = Topology.load()
    service = topology.resolve(name, topology.default_ports(), tmp_path)
    base = {
        "OTEL_SDK_DISABLED": "true",
        "GRPC_LISTEN_ADDR": "127.0.0.1:0",
        f"{name.upper()}_DB_PATH": str(tmp_path / f"{name}.db"),
    }
    return subprocess.run(
        list(service.command),
        cwd=REPO_ROOT,
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SERVICES = ["catalog", "orders", "inventory", "payments", "notifications", "gateway"]


@pytest.mark.parametrize("name", SERVICES)
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GRPC_LISTEN_ADDR", "no-port-here"),
        ("SHUTDOWN_GRACE_SECONDS", "soon"),
        ("SHUTDOWN_DRAIN_SECONDS", "-1"),
        ("FAULT_ERROR_PERCENT", "150"),
        ("FAULT_DELAY_MS", "1.5"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_malformed_config_stops_the_process_naming_the_variable(
    tmp_path: Path, name: str, variable: str, value: str
) -> None:
    assert_stops_naming(tmp_path, name, variable, value)


def assert_stops_naming(tmp_path: Path, name: str, variable: str, value: str) -> None:
    result = start(name, tmp_path, **{variable: value})
    assert result.returncode == 2, result.stderr
    assert f"configuration error: {variable}" in result.stderr
    assert not any(mark in result.stderr for mark in STACK_TRACE_MARKS), result.stderr


@pytest.mark.parametrize(
    ("name", "variable", "value"),
    [
        ("catalog", "CATALOG_PAGE_TOKEN_KEY", "not-hex"),
        ("notifications", "NOTIFICATIONS_PAGE_TOKEN_KEY", "abcd"),  # too short
        ("notifications", "NATS_URL", "http://nats:4222"),
        ("orders", "NATS_URL", "http://nats:4222"),
        ("orders", "ORDERS_PAGE_TOKEN_KEY", "not-hex"),
        ("orders", "ORDERS_UPSTREAM_TIMEOUT_SECONDS", "0"),
        ("orders", "ORDERS_STEP_RETRY_SECONDS", "-1"),
        ("orders", "ORDERS_RESUME_INTERVAL_SECONDS", "often"),
        ("orders", "ORDERS_TEST_PAUSE_AFTER_STEP", "placed"),  # nothing to hold before it
        ("gateway", "GATEWAY_ROUTES_FILE", "/nonexistent/routes.yaml"),
        ("gateway", "GATEWAY_UPSTREAM_ORDERS", "no-port-here"),
        ("gateway", "GATEWAY_JWT_KEY", "too-short"),
        ("gateway", "GATEWAY_API_KEYS", "no-subject"),
        ("gateway", "GATEWAY_RATE_PER_SECOND", "-1"),
        ("gateway", "GATEWAY_RATE_BURST", "0"),
        ("gateway", "GATEWAY_MAX_MESSAGE_BYTES", "big"),
        ("gateway", "GATEWAY_DEFAULT_TIMEOUT_SECONDS", "later"),
        ("gateway", "GATEWAY_ACCESS_LOG", "sometimes"),
    ],
)
def test_a_malformed_service_variable_is_named(
    tmp_path: Path, name: str, variable: str, value: str
) -> None:
    assert_stops_naming(tmp_path, name, variable, value)


@pytest.mark.parametrize("name", SERVICES)
def test_a_taken_port_stops_the_process(tmp_path: Path, name: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = start(name, tmp_path, GRPC_LISTEN_ADDR=f"127.0.0.1:{port}")
    assert result.returncode == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert not any(mark in result.stderr for mark in STACK_TRACE_MARKS), result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_mtls_is_on_by_default_in_every_language_and_needs_its_certificates(
    tmp_path: Path, name: str
) -> None:
    # Blank is unset (the session's own MESH_MTLS=off must not count here).
    empty = tmp_path / "no-certs"
    result = start(name, tmp_path, MESH_MTLS="", MESH_CERTS_DIR=str(empty), OTEL_SERVICE_NAME=name)
    assert result.returncode == 2, result.stderr
    assert f"configuration error: MESH_MTLS is on but {empty / 'ca.pem'} is missing" in (
        result.stderr
    )
    assert not any(mark in result.stderr for mark in STACK_TRACE_MARKS), result.stderr


@pytest.mark.parametrize("name", SERVICES)
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESH_MTLS", "sometimes"),
        ("MESH_SERVICE_IDENTITY", "bank"),
    ],
)
def test_a_malformed_mesh_variable_is_named(
    tmp_path: Path, name: str, variable: str, value: str
) -> None:
    # With mTLS on, where the identity matters; the flag is read first.
    result = start(name, tmp_path, **{"MESH_MTLS": "on", variable: value})
    assert result.returncode == 2, result.stderr
    assert f"configuration error: {variable}" in result.stderr
    assert not any(mark in result.stderr for mark in STACK_TRACE_MARKS), result.stderr
