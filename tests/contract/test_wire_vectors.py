"""Python, Go and TypeScript stubs agree byte for byte on the wire vectors.

tests/contract/wire/vectors.json holds messages of every contract as proto3
JSON and deterministic binary. Each language decodes the bytes, encodes them
again and parses the JSON; all of it must give the same bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from localmode.topology import REPO_ROOT
from tests.contract.wire import make_vectors

WIRE_DIR = REPO_ROOT / "tests" / "contract" / "wire"
VECTORS_PATH = WIRE_DIR / "vectors.json"
TSC = REPO_ROOT / "node_modules" / ".bin" / "tsc"

VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def run(
    *args: str | Path,
    cwd: Path = REPO_ROOT,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def new_message(full_name: str) -> Message:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)()


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert VECTORS_PATH.read_text(encoding="utf-8") == make_vectors.render(), (
        "vectors.json drifted: run .venv/bin/python tests/contract/wire/make_vectors.py"
    )


def test_vectors_cover_every_contract_package() -> None:
    packages = {vector["type"].rsplit(".", 1)[0] for vector in VECTORS}
    assert packages >= {
        "shop.catalog.v1",
        "shop.orders.v1",
        "shop.inventory.v1",
        "shop.payments.v1",
        "shop.notifications.v1",
        "shop.events.v1",
    }
    assert len({vector["name"] for vector in VECTORS}) == len(VECTORS), "duplicate names"


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_python_agrees_with_vector(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["hex"])

    decoded = new_message(vector["type"])
    decoded.ParseFromString(wire)
    assert decoded.SerializeToString(deterministic=True).hex() == vector["hex"]
    assert json_format.MessageToDict(decoded) == vector["json"]

    parsed = json_format.ParseDict(vector["json"], new_message(vector["type"]))
    assert parsed.SerializeToString(deterministic=True).hex() == vector["hex"]
    assert parsed == decoded


def test_go_agrees_with_vectors() -> None:
    # -count=1: never report a cached result.
    result = run("go", "test", "-count=1", "./...", cwd=WIRE_DIR / "go", timeout=600)
    assert result.returncode == 0, output(result)


def test_typescript_agrees_with_vectors(tmp_path: Path) -> None:
    if not TSC.exists():
        pytest.fail(f"{TSC} is missing: run 'make tools'")
    compiled = run(TSC, "-p", WIRE_DIR / "ts" / "tsconfig.json", "--outDir", tmp_path, timeout=300)
    assert compiled.returncode == 0, output(compiled)
    # The compiled files live outside the repo: let them find its node_modules.
    env = {**os.environ, "NODE_PATH": str(REPO_ROOT / "node_modules")}
    script = tmp_path / "tests" / "contract" / "wire" / "ts" / "wire.test.js"
    result = run("node", script, VECTORS_PATH, timeout=120, env=env)
    assert result.returncode == 0, output(result)
