"""mesh.run: the loop MESH_EVENT_LOOP picks, and how a bad start ends the process.

uvloop is not a dependency, so the uvloop case runs with a stand-in module
whose `new_event_loop` makes a recognisable asyncio loop: what is tested is
that the choice reaches `asyncio.Runner`, not uvloop itself.
"""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from mesh.config import ConfigError
from mesh.run import run


class StandInLoop(asyncio.SelectorEventLoop):
    """What the stand-in uvloop makes: a plain loop with its own type."""


def loop_type_under(environ: dict[str, str]) -> type[asyncio.AbstractEventLoop]:
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))

    run(main, environ)
    return seen[0]


@pytest.fixture
def stand_in_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("uvloop")
    module.new_event_loop = StandInLoop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvloop", module)


@pytest.mark.parametrize("environ", [{}, {"MESH_EVENT_LOOP": "asyncio"}, {"MESH_EVENT_LOOP": " "}])
def test_asyncio_loop_is_the_default(environ: dict[str, str], stand_in_uvloop: None) -> None:
    loop = loop_type_under(environ)
    assert loop is not StandInLoop
    assert issubclass(loop, asyncio.BaseEventLoop)


@pytest.mark.parametrize("value", ["uvloop", "UVLoop"])
def test_uvloop_is_used_when_asked_for(value: str, stand_in_uvloop: None) -> None:
    assert loop_type_under({"MESH_EVENT_LOOP": value}) is StandInLoop


def test_an_unknown_loop_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        loop_type_under({"MESH_EVENT_LOOP": "trio"})
    assert exit_.value.code == 2
    assert "MESH_EVENT_LOOP must be asyncio or uvloop, got 'trio'" in capsys.readouterr().err


def test_uvloop_asked_for_but_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    with pytest.raises(SystemExit) as exit_:
        loop_type_under({"MESH_EVENT_LOOP": "uvloop"})
    assert exit_.value.code == 2
    assert "MESH_EVENT_LOOP=uvloop but uvloop is not installed" in capsys.readouterr().err


def test_a_configuration_error_in_main_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        raise ConfigError("CATALOG_DB_PATH is required but not set")

    with pytest.raises(SystemExit) as exit_:
        run(main, {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "configuration error: CATALOG_DB_PATH is required but not set\n"


def test_a_port_that_cannot_be_bound_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        raise OSError("address already in use")

    with pytest.raises(SystemExit) as exit_:
        run(main, {})
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "cannot start: address already in use\n"
