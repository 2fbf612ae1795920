"""configure_logging: one JSON object per line on stderr, with trace and span ids."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tracing.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    # configure_logging changes process-wide state; other tests must not see it.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def _lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines()]


def test_a_line_outside_a_span_has_the_fields_and_no_trace_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("orders")

    logging.getLogger("orders.saga").info("reserved %d items", 3, extra={"order_id": "o-1"})

    (line,) = _lines(capsys.readouterr().err)
    assert list(line)[:5] == ["time", "level", "logger", "message", "service"]
    assert line["level"] == "INFO"
    assert line["logger"] == "orders.saga"
    assert line["message"] == "reserved 3 items"
    assert line["service"] == "orders"
    assert line["order_id"] == "o-1"
    assert line["time"].endswith("+00:00")
    assert "trace_id" not in line
    assert "span_id" not in line


def test_a_line_inside_a_span_carries_its_w3c_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("orders")
    tracer = TracerProvider().get_tracer(__name__)

    with tracer.start_as_current_span("checkout") as span:
        logging.getLogger("orders").warning("slow")
        context = span.get_span_context()

    (line,) = _lines(capsys.readouterr().err)
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["trace_id"] == trace.format_trace_id(context.trace_id)


def test_an_exception_is_one_field_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("orders")

    try:
        raise ValueError("bad card")
    except ValueError:
        logging.getLogger("orders").exception("charge failed")

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    (line,) = _lines(err)
    assert line["level"] == "ERROR"
    assert line["message"] == "charge failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: bad card")


def test_level_filters_and_a_second_call_replaces_the_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("orders", "info")
    configure_logging("orders", "WARNING")

    log = logging.getLogger("orders")
    log.info("hidden")
    log.warning("shown")

    assert [line["message"] for line in _lines(capsys.readouterr().err)] == ["shown"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="'LOUD'"):
        configure_logging("orders", "LOUD")
