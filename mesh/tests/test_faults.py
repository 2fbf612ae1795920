"""The fault file (mesh.faults): its schema, and rules switched on a running server.

The run-time test starts a server with MESH_FAULTS_FILE naming a file that
does not exist yet, then writes, changes, breaks and deletes it, and polls
until each change shows in the calls: no restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import Env
from mesh.faults import FaultFile, FaultFileError, FaultRule, parse_faults
from mesh.interceptors import FaultConfig
from mesh.server import ServerConfig, build_server, start

SERVICE = "test.mesh.v1.Probe"
TIMEOUT = 10.0
Context = grpc.aio.ServicerContext[bytes, bytes]


def test_a_service_reads_its_own_rules() -> None:
    text = """
version: 1
faults:
  payments:
    "*": {delay_ms: 300}
  inventory:
    ReserveStock: {error_ratio: 0.3, error_code: UNAVAILABLE}
    "*": {error_ratio: 1, error_code: RESOURCE_EXHAUSTED, delay_ms: 5}
"""
    assert parse_faults(text, "payments") == {"*": FaultRule(delay_ms=300)}
    assert parse_faults(text, "inventory") == {
        "ReserveStock": FaultRule(error_ratio=0.3),
        "*": FaultRule(5, 1.0, grpc.StatusCode.RESOURCE_EXHAUSTED),
    }
    assert parse_faults(text, "catalog") == {}


@pytest.mark.parametrize(
    "text",
    ["", "# nothing yet\n", "faults:\n", "faults: {}\n", "version: 1\n", "faults:\n  catalog:\n"],
)
def test_no_rules(text: str) -> None:
    assert parse_faults(text, "catalog") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("faults: [catalog]", "1|faults: must be a mapping, got a list"),
        ("fault: {}", "1|fault: unknown key; expected version, faults"),
        ("version: 2", "1|version: must be 1, got '2'"),
        ("version: '1'", "1|version: must be 1, got '1'"),
        ("faults:\n  catalog: [x]", "2|faults.catalog: must be a mapping, got a list"),
        ("faults:\n  catalog:\n    Get: 300", "3|faults.catalog.Get: must be a mapping"),
        ("faults:\n  catalog:\n    Get: {}", "3|faults.catalog.Get: a rule needs at least one"),
        ("faults:\n  catalog:\n    Get: {delay: 1}", "3|faults.catalog.Get.delay: unknown key"),
        ("faults:\n  catalog:\n    Get: {delay_ms: -1}", "must be at least 0, got -1"),
        ("faults:\n  catalog:\n    Get: {delay_ms: 1.5}", "must be an integer, got a number"),
        ("faults:\n  catalog:\n    Get: {delay_ms: true}", "must be an integer, got a boolean"),
        ("faults:\n  catalog:\n    Get: {error_ratio: 1.5}", "must be within [0, 1], got 1.5"),
        ("faults:\n  catalog:\n    Get: {error_ratio: -0.1}", "must be within [0, 1]"),
        ("faults:\n  catalog:\n    Get: {error_ratio: .nan}", "must be a finite number"),
        ("faults:\n  catalog:\n    Get: {error_ratio: half}", "must be a number, got a string"),
        ("faults:\n  catalog:\n    Get: {error_code: OK}", "'OK' is not a gRPC status code"),
        ("faults:\n  catalog:\n    Get: {error_code: unavailable}", "(write UNAVAILABLE)"),
        ("faults:\n  catalog:\n    Get: {error_code: 14}", "must be a non-empty string"),
        ("faults:\n  catalog:\n    /shop.X/Get: {delay_ms: 1}", "(write Get)"),
        ("faults:\n  catalog:\n    Get: {delay_ms: 1}\n    Get: {delay_ms: 2}", "duplicate key"),
        ("faults:\n  catalog: {Get: {delay_ms: 1}", "(document): not valid YAML"),
    ],
)
def test_schema_errors_name_the_line_and_key(text: str, expected: str) -> None:
    line, _, problem = expected.rpartition("|")
    with pytest.raises(FaultFileError) as caught:
        parse_faults(text, "catalog", "faults.yaml")
    assert problem in str(caught.value)
    assert str(caught.value).startswith("faults.yaml:")
    if line:
        assert caught.value.line == int(line)


def test_other_services_entries_are_checked_for_shape_only() -> None:
    # Values only payments' reader would refuse: not catalog's business.
    text = "faults:\n  payments:\n    Charge: {delay_ms: -5, error_code: NOPE}\n"
    assert parse_faults(text, "catalog") == {}
    with pytest.raises(FaultFileError, match=r"payments\.Charge: must be a mapping"):
        parse_faults("faults:\n  payments:\n    Charge: 5\n", "catalog")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_file_is_looked_at_once_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh.faults")
    path, clock = tmp_path / "faults.yaml", _Clock()
    faults = FaultFile(path, "catalog", clock)
    assert faults.rule_for("/x.Catalog/Get") is None
    path.write_text("faults:\n  catalog:\n    Get: {delay_ms: 7}\n")
    assert faults.rule_for("/x.Catalog/Get") is None  # not looked at yet
    clock.now = 1.0
    assert faults.rule_for("/x.Catalog/Get") == FaultRule(delay_ms=7)
    assert faults.rule_for("/x.Catalog/List") is None
    assert f"fault rules from {path}: 1 for catalog" in caplog.text

    path.write_text("faults:\n  catalog:\n    Get: {delay_ms: oops}\n")
    clock.now = 2.0
    assert faults.rule_for("/x.Catalog/Get") == FaultRule(delay_ms=7)  # kept
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert "delay_ms: must be an integer" in warnings[0].getMessage()
    clock.now = 3.0
    faults.rule_for("/x.Catalog/Get")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # once

    path.unlink()
    clock.now = 4.0
    assert faults.rule_for("/x.Catalog/Get") is None
    assert "is gone" in caplog.text


def test_a_bad_file_at_start_is_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("faults: [")
    assert FaultFile(path, "catalog").rules() == {}


def test_the_file_is_read_from_the_environment(tmp_path: Path) -> None:
    env = {"MESH_MTLS": "off", "MESH_FAULTS_FILE": str(tmp_path / "f.yaml")}
    config = ServerConfig.from_env(Env({**env, "OTEL_SERVICE_NAME": "catalog"}), "127.0.0.1:0")
    assert config.fault_file == tmp_path / "f.yaml"
    assert config.service == "catalog"
    identity = {**env, "MESH_SERVICE_IDENTITY": "spiffe://shop.local/orders"}
    assert ServerConfig.from_env(Env(identity), "127.0.0.1:0").service == "orders"
    # Relative: to the repository root, as MESH_POLICY_FILE and MESH_TRAFFIC_FILE.
    relative = ServerConfig.from_env(Env({**env, "MESH_FAULTS_FILE": ".run/f.yaml"}), "h:1")
    assert relative.fault_file is not None
    assert relative.fault_file.is_absolute()
    assert relative.fault_file.parts[-2:] == (".run", "f.yaml")


async def test_a_fault_file_needs_the_service_name(tmp_path: Path) -> None:
    config = ServerConfig(
        "127.0.0.1:0", 0.0, 0.0, FaultConfig(), fault_file=tmp_path / "faults.yaml"
    )
    with pytest.raises(ValueError, match="MESH_FAULTS_FILE needs this service's name"):
        build_server(config, [SERVICE])
    assert build_server(config, [SERVICE], service="catalog").fault_file is not None


# --- switched at run time on a real server -------------------------------------


async def _echo(request: bytes, context: Context) -> bytes:
    return request


@asynccontextmanager
async def _served(path: Path, faults: FaultConfig | None = None) -> AsyncIterator[grpc.aio.Channel]:
    config = ServerConfig(
        "127.0.0.1:0", 0.0, 0.0, faults or FaultConfig(), fault_file=path, service="probe"
    )
    mesh = build_server(config, [SERVICE])
    handlers = {name: grpc.unary_unary_rpc_method_handler(_echo) for name in ("Get", "List")}
    mesh.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    try:
        await start(mesh)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
            yield channel
    finally:
        await mesh.server.stop(None)


async def _outcome(channel: grpc.aio.Channel, method: str) -> tuple[grpc.StatusCode, str]:
    try:
        await channel.unary_unary(f"/{SERVICE}/{method}", None, None)(b"x", timeout=TIMEOUT)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def _until(channel: grpc.aio.Channel, method: str, code: grpc.StatusCode) -> str:
    """Calls `method` until it ends with `code` (a few seconds at most); its details."""
    deadline = time.monotonic() + 8
    while True:
        got, details = await _outcome(channel, method)
        if got == code:
            return details
        assert time.monotonic() < deadline, f"{method} still ends {got}, not {code}"
        await asyncio.sleep(0.1)


async def _elapsed(channel: grpc.aio.Channel, method: str) -> float:
    start = time.perf_counter()
    assert (await _outcome(channel, method))[0] == grpc.StatusCode.OK
    return time.perf_counter() - start


async def test_faults_switched_at_run_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh.faults")
    path = tmp_path / "faults.yaml"
    async with _served(path) as channel:
        assert await _outcome(channel, "Get") == (grpc.StatusCode.OK, "")

        path.write_text(
            "faults:\n  probe:\n    Get: {error_ratio: 1, error_code: RESOURCE_EXHAUSTED}\n"
        )
        details = await _until(channel, "Get", grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert details == f"injected fault in /{SERVICE}/Get"
        assert await _outcome(channel, "List") == (grpc.StatusCode.OK, "")
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING

        path.write_text('faults:\n  probe:\n    "*": {delay_ms: 200}\n')
        await _until(channel, "Get", grpc.StatusCode.OK)
        assert await _elapsed(channel, "Get") > 0.15
        assert await _elapsed(channel, "List") > 0.15

        path.write_text("faults:\n  probe:\n    '*': {delay_ms: [broken\n")
        await asyncio.sleep(1.3)  # past the next look at the file
        assert await _elapsed(channel, "List") > 0.15  # the previous rules still apply
        assert any(
            r.levelno == logging.WARNING and str(path) in r.getMessage() for r in caplog.records
        )

        path.unlink()
        deadline = time.monotonic() + 8
        while await _elapsed(channel, "List") > 0.15:
            assert time.monotonic() < deadline, "the delay outlived its file"
            await asyncio.sleep(0.1)
        assert await _outcome(channel, "Get") == (grpc.StatusCode.OK, "")


async def test_the_file_wins_over_the_environment_per_method(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("faults:\n  probe:\n    Get: {delay_ms: 1}\n")
    async with _served(path, FaultConfig(error_percent=100)) as channel:
        assert await _outcome(channel, "Get") == (grpc.StatusCode.OK, "")
        code, details = await _outcome(channel, "List")  # the environment's rule
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details == f"injected fault in /{SERVICE}/List"
