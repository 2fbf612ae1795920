"""JSON logs on stderr, one object per line, carrying the current trace and span ids.

A line looks like::

    {"time": "2025-01-01T12:00:00.123456+00:00", "level": "INFO", "logger": "orders",
     "message": "order confirmed", "service": "orders",
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}

trace_id and span_id are lowercase hex as in a W3C ``traceparent`` header, so a
line can be pasted into Jaeger's search; they are absent outside any span.
An exception goes into one "exception" field (JSON escapes its newlines), so a
traceback never splits into lines that a log collector would read as entries.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.core import LogData
from pythonjsonlogger.json import JsonFormatter

__all__ = ["TraceContextFilter", "configure_logging", "json_formatter"]


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` of the current span to every record it sees.

    It is attached to the handler, not to a logger: a logger's filters do not
    run for records that propagate up from child loggers, a handler's do.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True


class _TimeFirstJsonFormatter(JsonFormatter):
    """python-json-logger adds the timestamp last; people scan log lines by time first."""

    def process_log_record(self, log_data: LogData) -> LogData:
        return {"time": log_data.pop("time"), **log_data}


def json_formatter(service_name: str) -> logging.Formatter:
    """The formatter behind ``configure_logging``, for callers that build their own handler."""
    return _TimeFirstJsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={
            "levelname": "level",
            "name": "logger",
            "exc_info": "exception",
            "stack_info": "stack",
        },
        static_fields={"service": service_name},
        # An aware UTC datetime, serialised as ISO 8601 by the formatter.
        timestamp="time",
    )


class _JsonStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so calling configure_logging again replaces it."""


def configure_logging(service_name: str, level: str = "INFO") -> None:
    """Send every log record of the process to stderr as one JSON object per line.

    Replaces a handler installed by an earlier call but leaves other handlers
    alone (pytest's capture handler, for one). ``level`` is a logging level name
    such as "DEBUG"; an unknown name raises ValueError naming it.
    """
    numeric = logging.getLevelNamesMapping().get(level.strip().upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _JsonStderrHandler)]:
        root.removeHandler(old)
        old.close()
    # sys.stderr is looked up now, not at import, so a replaced stderr is honoured.
    handler = _JsonStderrHandler(sys.stderr)
    handler.setFormatter(json_formatter(service_name))
    handler.addFilter(TraceContextFilter())
    root.addHandler(handler)
    root.setLevel(numeric)
