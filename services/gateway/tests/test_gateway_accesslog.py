"""Access log lines as JSON, through the formatter the gateway's process uses."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest

from gateway.accesslog import AccessLog, CallRecord
from gateway.auth import Identity
from tracing.logs import TraceContextFilter, json_formatter


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter("gateway"))
    handler.addFilter(TraceContextFilter())
    logger = logging.getLogger("test.gateway.access")
    logger.addHandler(handler)
    logger.propagate = False
    yield stream
    logger.removeHandler(handler)


def test_one_line_per_call_with_every_field(lines: io.StringIO) -> None:
    access_log = AccessLog(logger=logging.getLogger("test.gateway.access"))
    record = CallRecord("/shop.orders.v1.OrdersService/GetOrder", "orders:50052")
    record.identity = Identity("cus-1", "jwt")
    record.peer = "ipv4:127.0.0.1:4242"
    record.code = grpc.StatusCode.NOT_FOUND
    record.request_bytes = 12
    record.response_bytes = 0
    access_log.write(record)
    (line,) = lines.getvalue().splitlines()
    entry = json.loads(line)
    assert next(iter(entry)) == "time"
    assert entry["logger"] == "test.gateway.access"
    assert entry["service"] == "gateway"
    assert entry["message"] == "/shop.orders.v1.OrdersService/GetOrder NOT_FOUND"
    assert entry["method"] == "/shop.orders.v1.OrdersService/GetOrder"
    assert entry["upstream"] == "orders:50052"
    assert entry["identity"] == "cus-1"
    assert entry["credential"] == "jwt"
    assert entry["peer"] == "ipv4:127.0.0.1:4242"
    assert entry["code"] == "NOT_FOUND"
    assert entry["request_bytes"] == 12
    assert entry["response_bytes"] == 0
    assert 0 <= entry["duration_ms"] < 10_000


def test_an_anonymous_call_has_no_identity(lines: io.StringIO) -> None:
    access_log = AccessLog(logger=logging.getLogger("test.gateway.access"))
    access_log.write(CallRecord("/a.v1.S/M", None))
    entry = json.loads(lines.getvalue())
    assert entry["identity"] is None
    assert entry["credential"] is None
    assert entry["upstream"] is None
    assert entry["code"] == "INTERNAL", "a call that ended in an escaped exception"


def test_switched_off_it_writes_nothing(lines: io.StringIO) -> None:
    access_log = AccessLog(enabled=False, logger=logging.getLogger("test.gateway.access"))
    access_log.write(CallRecord("/a.v1.S/M", "a:1"))
    assert lines.getvalue() == ""


def test_the_access_log_ignores_the_log_level(lines: io.StringIO) -> None:
    logger = logging.getLogger("test.gateway.access")
    logger.setLevel(logging.ERROR)
    AccessLog(logger=logger).write(CallRecord("/a.v1.S/M", "a:1"))
    assert lines.getvalue().count("\n") == 1


async def test_a_line_written_soon_follows_on_the_next_turn(lines: io.StringIO) -> None:
    access_log = AccessLog(logger=logging.getLogger("test.gateway.access"))
    access_log.write_soon(CallRecord("/a.v1.S/M", "a:1"))
    assert lines.getvalue() == ""
    await asyncio.sleep(0)
    assert json.loads(lines.getvalue())["method"] == "/a.v1.S/M"
