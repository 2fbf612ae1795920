"""The page's fault switch edits the services' fault file; bad input names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from console import faults
from console.config import ConsoleConfig, Target, parse_targets
from mesh.config import ConfigError, Env
from mesh.faults import parse_faults


def test_inject_then_clear_writes_a_file_every_service_reads(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    faults.inject(path, "payments", {"error_ratio": 1, "error_code": "UNAVAILABLE"})
    faults.inject(path, "inventory", {"delay_ms": 300, "method": "ReserveStock"})
    parse_faults(path.read_text(), "payments", str(path))  # as the service reads it
    shown = faults.document(path)["faults"]
    assert {(f["service"], f["method"], f["error_ratio"], f["delay_ms"]) for f in shown} == {
        ("payments", "*", 1.0, 0),
        ("inventory", "ReserveStock", 0.0, 300),
    }
    faults.clear(path, "payments")
    assert [f["service"] for f in faults.document(path)["faults"]] == ["inventory"]


@pytest.mark.parametrize(
    ("service", "body", "field"),
    [
        ("bank", {"error_ratio": 1}, "service"),
        ("payments", {"error_ratio": 2}, "error_ratio"),
        ("payments", {"delay_ms": -1}, "delay_ms"),
        ("payments", {"error_ratio": 0.5, "error_code": "TEAPOT"}, "error_code"),
        ("payments", {}, "delay_ms or error_ratio"),
        ("payments", ["not", "an", "object"], "body"),
    ],
)
def test_a_bad_fault_names_the_field(
    service: str, body: object, field: str, tmp_path: Path
) -> None:
    with pytest.raises(faults.BadFault, match=field):
        faults.inject(tmp_path / "faults.yaml", service, body)


def test_a_fault_file_that_cannot_be_written_says_which_and_why(tmp_path: Path) -> None:
    # A file where its folder should be: unwritable even for root, as ./faults
    # is to a container's user that does not own it.
    (tmp_path / "faults").write_text("")
    with pytest.raises(faults.Unwritable, match="the fault file"):
        faults.inject(tmp_path / "faults" / "faults.yaml", "payments", {"error_ratio": 1})


def test_targets_are_read_from_the_environment() -> None:
    config = ConsoleConfig.from_env(
        Env(
            {
                "CONSOLE_TARGETS": (
                    "gateway=gateway:9460|gateway:8080 "
                    "catalog=ipv4:127.0.0.1:1,127.0.0.1:2|ipv4:127.0.0.1:3,127.0.0.1:4"
                ),
                "JAEGER_QUERY_URL": "http://jaeger:16686/",
            }
        )
    )
    assert config.targets == (
        Target("gateway", "gateway:9460", "gateway:8080"),
        Target("catalog", "ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:3,127.0.0.1:4"),
    )
    assert config.jaeger_query_url == "http://jaeger:16686"
    assert config.jaeger_ui_url is None
    with pytest.raises(ConfigError, match="CONSOLE_TARGETS"):
        parse_targets("catalog=catalog:9461")
