"""Env's typed getters and the server's configuration from the environment."""

from __future__ import annotations

import pytest

from mesh.config import ConfigError, Env
from mesh.interceptors import FaultConfig
from mesh.server import ServerConfig


def test_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TEST_VALUE", "from the process")
    assert Env().text("MESH_TEST_VALUE") == "from the process"


def test_text() -> None:
    env = Env({"NAME": "  catalog  "})
    assert env.text("NAME") == "catalog"
    assert env.text("OTHER", "fallback") == "fallback"


@pytest.mark.parametrize("values", [{}, {"REQUIRED": ""}, {"REQUIRED": "   "}])
def test_a_missing_required_variable_is_named(values: dict[str, str]) -> None:
    env = Env(values)
    for getter in (env.text, env.integer, env.number, env.flag, env.address):
        with pytest.raises(ConfigError, match="REQUIRED is required"):
            getter("REQUIRED")


def test_optional() -> None:
    env = Env({"SET": " x ", "BLANK": " "})
    assert env.optional("SET") == "x"
    assert env.optional("BLANK") is None
    assert env.optional("MISSING") is None


def test_integer() -> None:
    env = Env({"N": "42", "NEG": "-3"})
    assert env.integer("N") == 42
    assert env.integer("NEG") == -3
    assert env.integer("MISSING", 7) == 7
    assert env.integer("MISSING", 0) == 0
    assert env.integer("N", minimum=42) == 42


@pytest.mark.parametrize("raw", ["ten", "1.5", "0x10", "4 2"])
def test_a_malformed_integer_is_named(raw: str) -> None:
    with pytest.raises(ConfigError, match="N must be an integer") as caught:
        Env({"N": raw}).integer("N", 1)
    assert repr(raw) in str(caught.value)


def test_integer_below_minimum_is_named() -> None:
    with pytest.raises(ConfigError, match="N must be at least 0, got -1"):
        Env({"N": "-1"}).integer("N", minimum=0)
    # The default is checked like a value from the environment.
    with pytest.raises(ConfigError, match="N must be at least 1"):
        Env({}).integer("N", 0, minimum=1)


def test_number() -> None:
    env = Env({"X": "2.5", "I": "3"})
    assert env.number("X") == 2.5
    assert env.number("I") == 3.0
    assert env.number("MISSING", 0.5) == 0.5
    assert env.number("X", minimum=2.5) == 2.5


@pytest.mark.parametrize("raw", ["fast", "1,5", "2s"])
def test_a_malformed_number_is_named(raw: str) -> None:
    with pytest.raises(ConfigError, match="X must be a number"):
        Env({"X": raw}).number("X", 1.0)


def test_number_below_minimum_is_named() -> None:
    with pytest.raises(ConfigError, match=r"X must be at least 0\.0"):
        Env({"X": "-0.1"}).number("X", minimum=0.0)


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on"])
def test_flag_true(raw: str) -> None:
    assert Env({"F": raw}).flag("F") is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF"])
def test_flag_false(raw: str) -> None:
    assert Env({"F": raw}).flag("F") is False


def test_flag_defaults() -> None:
    assert Env({}).flag("F", True) is True
    assert Env({}).flag("F", False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_a_malformed_flag_is_named(raw: str) -> None:
    with pytest.raises(ConfigError, match="F must be true or false"):
        Env({"F": raw}).flag("F", False)


@pytest.mark.parametrize("raw", ["0.0.0.0:50051", "localhost:0", "[::1]:8080", "catalog:65535"])
def test_address(raw: str) -> None:
    assert Env({"A": raw}).address("A") == raw


def test_address_default() -> None:
    assert Env({}).address("A", "0.0.0.0:50051") == "0.0.0.0:50051"


@pytest.mark.parametrize("raw", ["50051", ":50051", "localhost:", "localhost:http", "h:65536"])
def test_a_malformed_address_is_named(raw: str) -> None:
    with pytest.raises(ConfigError, match="A must be host:port"):
        Env({"A": raw}).address("A", "0.0.0.0:1")


def test_server_config_defaults() -> None:
    config = ServerConfig.from_env(Env({"MESH_MTLS": "off"}), default_addr="0.0.0.0:50051")
    assert config == ServerConfig(
        listen_addr="0.0.0.0:50051", grace_s=10.0, drain_s=0.5, faults=FaultConfig()
    )
    assert not config.faults.enabled


def test_server_config_from_the_environment() -> None:
    env = Env(
        {
            "MESH_MTLS": "off",
            "GRPC_LISTEN_ADDR": "127.0.0.1:0",
            "SHUTDOWN_GRACE_SECONDS": "3",
            "SHUTDOWN_DRAIN_SECONDS": "0",
            "FAULT_DELAY_MS": "250",
            "FAULT_ERROR_PERCENT": "12.5",
            "GRPC_MAX_CONNECTION_AGE_SECONDS": "30",
        }
    )
    config = ServerConfig.from_env(env, default_addr="0.0.0.0:50051")
    assert config == ServerConfig(
        listen_addr="127.0.0.1:0",
        grace_s=3.0,
        drain_s=0.0,
        faults=FaultConfig(delay_ms=250, error_percent=12.5),
        max_connection_age_s=30.0,
    )
    assert config.faults.enabled


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("GRPC_LISTEN_ADDR", "nowhere"),
        ("SHUTDOWN_GRACE_SECONDS", "-1"),
        ("SHUTDOWN_DRAIN_SECONDS", "soon"),
        ("FAULT_DELAY_MS", "-5"),
        ("FAULT_ERROR_PERCENT", "101"),
        ("FAULT_ERROR_PERCENT", "-1"),
        ("MESH_METRICS_ADDRESS", "9464"),
        ("MESH_SERVICE_IDENTITY", "spiffe://elsewhere/catalog"),
    ],
)
def test_server_config_errors_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        ServerConfig.from_env(Env({"MESH_MTLS": "off", name: raw}), default_addr="0.0.0.0:50051")


@pytest.mark.parametrize(
    ("faults", "enabled"),
    [
        (FaultConfig(), False),
        (FaultConfig(delay_ms=1), True),
        (FaultConfig(error_percent=0.1), True),
    ],
)
def test_fault_config_enabled(faults: FaultConfig, enabled: bool) -> None:
    assert faults.enabled is enabled


@pytest.mark.parametrize(
    ("raw", "level"),
    [(None, "INFO"), ("debug", "DEBUG"), (" Warning ", "WARNING"), ("warn", "WARNING")],
)
def test_log_level(raw: str | None, level: str) -> None:
    env = Env({} if raw is None else {"LOG_LEVEL": raw})
    assert env.log_level() == level


def test_an_unknown_log_level_is_named() -> None:
    with pytest.raises(ConfigError, match="LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"):
        Env({"LOG_LEVEL": "loud"}).log_level()
